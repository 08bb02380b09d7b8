"""Stealing attacks as pure functions ``(oracle or model, data, params) -> new model`` (issue 14), after the SAC
paper's official code (github guanjiyang/SAC; Guan, Liang, He, NeurIPS 2022, appendix Table 3):

* :func:`extract_labels` (Extract-L, ``model_extract_l.py``): a student trained with cross-entropy on the
  victim's arg-max labels of the attacker's data; SGD lr 0.05, momentum 0.9, weight decay 5e-4, cosine
  schedule, batch 512.
* :func:`extract_probabilities` (Extract-P, ``model_extract_p.py``): knowledge distillation,
  ``alpha T^2 KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) CE(s, argmax t)`` with T = 20, alpha = 0.9; SGD lr 0.1.
  The KL term is averaged over batch x classes, as torch's ``KLDivLoss()`` (reduction "mean") in that code does.
* :func:`extract_adversarial` (Extract-Adv, ``model_extract_adv.py``): an Extract-L student trained 2 more epochs
  on ``CE(x) + CE(PGD(x))`` with the victim's labels; PGD against the student: L-inf eps 4/256, step 1/256,
  30 steps, no random start, plain SGD lr 1e-3, batch 256.
* :func:`finetune` (Finetune-A / Finetune-L, ``fine_tune.py``): the source trained on the attacker's data with its
  true labels, SGD lr 5e-4, momentum 0.9, weight decay 5e-4, batch 512, 30 epochs; all layers, or only the
  classifier head (the official code optimises ``vgg.classifier``: every dense layer after the last
  convolution/pooling, which is what ``last_only`` means here).
* :func:`fine_prune` (Pruning, ``pruning.py``, fine-pruning of Liu et al. 2018): conv channels pruned one at a
  time, globally, least active first (activations of one attacker batch of 256, refreshed every ``refresh``
  prunings); every ``finetune_every`` prunings one fine-tuning pass over 2,056 attacker examples (SGD lr 1e-3,
  true labels); a snapshot every 5 % of all channels, up to 80 %. SAC's counts (refresh 20, fine-tune every 50)
  are of torchvision VGG16's 4,224 channels; the SAC zoo scales them to its network's channel count
  (:func:`scaled_prune_intervals`: every 2 and 6 of the width-reduced VGG16's 528), so that as much of the
  network is pruned between two fine-tuning passes as in SAC. Three more differences, each found on the SAC
  zoo's VGG16 (test accuracy 0.90), whose first build with the official rules gave 0.54 at 5 % pruned and chance
  (0.10) from 35 % on (records since replaced; the variants were compared in one-off checks, not a committed
  command), where SAC's pruned sources stay usable: a channel's activity is its mean activation
  after its batch norm and ReLU (fine-pruning's "activation"; SAC hooks the conv's raw output, whose scale a
  following batch norm removes, so the first layer's 8 channels ranked lowest); pruning zeroes the channel's
  kernel and its batch norm's scale and shift, so it outputs 0 as a removed channel does (the official mask on
  ``weight`` alone leaves ``beta - gamma * mean / std``); and the batch norms use PyTorch's running-statistics
  momentum while pruning (:data:`FINE_PRUNE_BN_MOMENTUM`), as SAC's fine-tuning steps do. Even so the
  width-reduced network is at chance from 40 % pruned with SAC's small in-loop steps alone, so the SAC zoo
  fine-tunes each snapshot after pruning (:func:`finetune_pruned`, the "fine" of Liu et al.'s fine-pruning),
  its pruned channels held at zero.
* :func:`transfer` (Transfer-A / Transfer-L, SAC Table 5): the source given a new head for another label set and
  trained on it, all layers or the head only.
* :func:`adversarial_finetune`: the source trained a few epochs on ``CE(x) + CE(PGD(x))`` with true labels
  (adversarial fine-tuning, Madry et al.-style PGD as above).

Where the official code differs from its evident intent, the intent is followed and the difference is
written here: its cosine scheduler is stepped every *iteration* with ``T_max = 200`` (so the learning rate
oscillates every 400 iterations); here the cosine anneals once over the whole training, its stated epochs. Its
PGD runs the student in training mode (batch-norm statistics updated by the 30 attack passes); here PGD
runs in inference mode. Weight decay is added to the gradient before momentum (torch's SGD), not decoupled.

Without ``augment`` the victim's answers are asked for once per attacker example and reused every epoch. With
``augment`` (a name of :data:`~ipguard_tf.zoo.train.AUGMENTATIONS`; SAC's attacker loaders, ``dataset.py``, crop
with zero padding 4 and flip: ``"crop4zero+flip"``) every batch is augmented afresh and the extraction attacks
ask the victim about each augmented batch, every epoch, as SAC's thieves do (``model_extract_l.py``,
``model_extract_p.py``, ``model_extract_adv.py``); ``Oracle.queries`` counts every point asked (epochs x
examples). Fine-tuning and fine-pruning take the same augmentation with the attacker's true labels
(``fine_tune.py``, ``pruning.py``). Every function seeds its randomness (batch order, augmentation, initial
weights) from ``seed``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from ipguard_tf.core.checks import check_number
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.io.progress import progress_bar
from ipguard_tf.zoo.postprocess import _following_bn, copy_model
from ipguard_tf.zoo.train import SGDRecipe, _ce, _ce_loss, augmentation, deterministic, sgd_train

log = logging.getLogger(__name__)


#: SAC ``model_extract_l.py`` (200 epochs there; profiles scale the epochs and record them)
EXTRACT_L = SGDRecipe(0.05, epochs=200, schedule="cosine")
#: SAC ``model_extract_p.py``
EXTRACT_P = SGDRecipe(0.1, epochs=200, schedule="cosine")
EXTRACT_P_TEMPERATURE = 20.0
EXTRACT_P_ALPHA = 0.9
#: SAC ``model_extract_adv.py``
EXTRACT_ADV = SGDRecipe(1e-3, epochs=2, momentum=0.0, weight_decay=0.0, batch_size=256)
PGD_EPSILON = 4 / 256
PGD_STEP = 1 / 256
PGD_STEPS = 30
#: SAC ``fine_tune.py``
FINETUNE = SGDRecipe(5e-4, epochs=30)
#: SAC ``pruning.py``
FINE_PRUNE_LR = 1e-3
FINE_PRUNE_BATCH = 256
FINE_PRUNE_REFRESH = 20
FINE_PRUNE_FINETUNE_EVERY = 50
FINE_PRUNE_FINETUNE_EXAMPLES = 2056
FINE_PRUNE_MAX_FRACTION = 0.8
FINE_PRUNE_SNAPSHOTS = 20  # a snapshot each time another 1/20 (5 %) of the channels is pruned
#: conv channels of SAC's source, torchvision's VGG16-BN (64 x 2 + 128 x 2 + 256 x 3 + 512 x 6): SAC's refresh and
#: fine-tuning intervals are counted in its channels
SAC_VGG16_CHANNELS = 4224


def scaled_prune_intervals(channels: int) -> Tuple[int, int]:
    """SAC's fine-pruning intervals (activations refreshed every 20 prunings, a fine-tuning pass every 50, of
    VGG16's 4,224 channels) for a network of ``channels`` conv channels: the same fractions of its channels
    (at least 1). On a width-reduced VGG16 (528 channels) SAC's absolute counts would prune 9.5 % of the
    channels between two fine-tuning passes instead of 1.2 %."""
    scale = channels / SAC_VGG16_CHANNELS
    return max(1, int(round(FINE_PRUNE_REFRESH * scale))), max(1, int(round(FINE_PRUNE_FINETUNE_EVERY * scale)))


#: batch-norm momentum during fine-pruning's fine-tuning steps: PyTorch's default (momentum 0.1 there is 0.9 here)
FINE_PRUNE_BN_MOMENTUM = 0.9
#: transfer and adversarial fine-tuning: not in the official code; chosen (see the functions)
TRANSFER = SGDRecipe(0.01, epochs=5)
ADV_FINETUNE = SGDRecipe(5e-4, epochs=2, batch_size=256)


# -- one training loop ---------------------------------------------------------------------------------------------
def pgd(
    model, x: tf.Tensor, y: tf.Tensor, *, epsilon: float = PGD_EPSILON, step: float = PGD_STEP, steps: int = PGD_STEPS
) -> tf.Tensor:
    """Untargeted L-inf PGD without random start (SAC ``model_extract_adv.py``): ``steps`` signed-gradient
    ascent steps of size ``step`` on the cross-entropy of ``model`` at labels ``y``, projected onto the
    ``epsilon`` ball around ``x`` and onto [0, 1]. Usable inside ``tf.function``."""
    x = tf.convert_to_tensor(x, tf.float32)
    adv = tf.identity(x)
    for _ in tf.range(steps):
        with tf.GradientTape() as tape:
            tape.watch(adv)
            loss = _ce(y, model(adv, training=False))
        adv = adv + step * tf.sign(tape.gradient(loss, adv))
        adv = tf.clip_by_value(tf.clip_by_value(adv, x - epsilon, x + epsilon), 0.0, 1.0)
    return tf.stop_gradient(adv)


# -- extraction --------------------------------------------------------------------------------------------------
def _student(make_student: Callable[[], Any], seed: int):
    deterministic(seed)
    model = make_student()
    if not hasattr(model, "trainable_variables"):
        raise ParameterError("make_student must return a Keras model")
    return model


def _info(oracle, before: int, recipe: SGDRecipe, **extra) -> Dict[str, Any]:
    return dict(queries=oracle.queries - before, recipe=recipe.as_dict(), **extra)


def extract_labels(
    oracle,
    x_attack: np.ndarray,
    make_student: Callable[[], Any],
    *,
    recipe: SGDRecipe = EXTRACT_L,
    augment: Optional[str] = None,
    seed: int = 0,
    progress: bool = True,
) -> Tuple[Any, Dict]:
    """Extract-L: a new student (``make_student()``, a Keras model giving logits) trained on the victim's labels
    of ``x_attack`` (with ``augment``: of each augmented batch, see the module docstring). Returns ``(student,
    info)``; ``info["queries"]`` is the number of points the oracle answered."""
    before = oracle.queries
    aug = augmentation(augment)
    y = oracle.labels(x_attack) if aug is None else None
    student = _student(make_student, seed)
    sgd_train(
        student,
        x_attack,
        y,
        lambda m, xb, yb: _ce(yb, m(xb, training=True)),
        recipe,
        seed=seed,
        desc="Extract-L",
        progress=progress,
        augment=aug,
        targets_fn=None if aug is None else oracle.labels,
    )
    return student, _info(oracle, before, recipe, augment=augment)


def extract_probabilities(
    oracle,
    x_attack: np.ndarray,
    make_student: Callable[[], Any],
    *,
    recipe: SGDRecipe = EXTRACT_P,
    temperature: float = EXTRACT_P_TEMPERATURE,
    alpha: float = EXTRACT_P_ALPHA,
    augment: Optional[str] = None,
    seed: int = 0,
    progress: bool = True,
) -> Tuple[Any, Dict]:
    """Extract-P: a student distilled from the victim's probabilities (see the module docstring). The victim's
    probabilities are softened as ``softmax(log p / T)``, equal to ``softmax(t / T)`` for its logits t."""
    if not temperature > 0 or not 0 <= alpha <= 1:
        raise ParameterError(f"temperature must be positive and alpha lie in [0, 1], got {temperature}, {alpha}")
    before = oracle.queries
    t, a = float(temperature), float(alpha)

    def targets_of(xb: np.ndarray) -> np.ndarray:  # the softened probabilities, then the arg-max label
        p = oracle.probabilities(xb)
        soft = tf.nn.softmax(np.log(np.maximum(p, 1e-30)).astype(np.float32) / t).numpy()
        return np.concatenate([soft, np.argmax(p, axis=1)[:, None].astype(np.float32)], axis=1)

    aug = augmentation(augment)
    targets = targets_of(x_attack) if aug is None else None

    def loss(m, xb, tb):
        s = m(xb, training=True)
        q, lab = tb[:, :-1], tf.cast(tb[:, -1], tf.int64)
        log_s = tf.nn.log_softmax(s / t)
        kl = tf.reduce_mean(tf.where(q > 0, q * (tf.math.log(tf.maximum(q, 1e-30)) - log_s), 0.0))
        return kl * (a * t * t) + _ce(lab, s) * (1.0 - a)

    student = _student(make_student, seed)
    sgd_train(
        student,
        x_attack,
        targets,
        loss,
        recipe,
        seed=seed,
        desc="Extract-P",
        progress=progress,
        augment=aug,
        targets_fn=None if aug is None else targets_of,
    )
    return student, _info(oracle, before, recipe, temperature=t, alpha=a, augment=augment)


def _pgd_pair(epsilon: float, step: float, steps: int) -> Dict[str, Callable]:
    """``sgd_train`` arguments for ``CE(x) + CE(PGD(x))``: the PGD examples made outside the gradient tape."""

    def prepare(m, xb, yb):
        return pgd(m, xb, yb, epsilon=epsilon, step=step, steps=steps)

    def loss(m, xb, yb, adv):
        return _ce(yb, m(xb, training=True)) + _ce(yb, m(adv, training=True))

    return {"loss_fn": loss, "prepare": prepare}


def extract_adversarial(
    oracle,
    x_attack: np.ndarray,
    student,
    *,
    labels: Optional[np.ndarray] = None,
    recipe: SGDRecipe = EXTRACT_ADV,
    epsilon: float = PGD_EPSILON,
    step: float = PGD_STEP,
    steps: int = PGD_STEPS,
    max_examples: Optional[int] = None,
    augment: Optional[str] = None,
    seed: int = 0,
    progress: bool = True,
) -> Tuple[Any, Dict]:
    """Extract-Adv: a copy of an Extract-L ``student`` trained further on clean plus PGD examples (against the
    copy itself) with the victim's labels of ``x_attack`` (``labels`` if the thief kept them from Extract-L,
    else asked again; with ``augment``, the victim's labels of each augmented batch, ``labels`` unused, as SAC's
    ``model_extract_adv.py``). ``max_examples`` caps each epoch at that many (random) examples, where 30 PGD
    steps per example cost too much. The student passed in is not modified."""
    before = oracle.queries
    aug = augmentation(augment)
    if aug is not None:
        y = None
    else:
        y = oracle.labels(x_attack) if labels is None else np.asarray(labels, np.int64)
    deterministic(seed)
    new = copy_model(student)
    sgd_train(
        new,
        x_attack,
        y,
        recipe=recipe,
        seed=seed,
        desc="Extract-Adv",
        progress=progress,
        max_examples=max_examples,
        augment=aug,
        targets_fn=None if aug is None else oracle.labels,
        **_pgd_pair(epsilon, step, steps),
    )
    info = dict(epsilon=epsilon, step=step, steps=steps, max_examples=max_examples, augment=augment)
    return new, _info(oracle, before, recipe, **info)


# -- the source, post-processed with the attacker's data ---------------------------------------------------------------
def head_layers(model) -> List[Any]:
    """The classifier head: the layers with weights after the last convolution/pooling (all dense layers of a
    VGG's classifier block); a model without convolutions: its last layer with weights."""
    layers = list(model.layers)
    last_conv = max(
        (i for i, l in enumerate(layers) if "Conv" in type(l).__name__ or "Pool" in type(l).__name__), default=None
    )
    tail = [l for l in layers[(last_conv + 1 if last_conv is not None else 0) :] if l.weights]
    if last_conv is None or not tail:
        tail = [next(l for l in reversed(layers) if l.weights)]
    return tail


def _train_copy(model, x, y, recipe, *, last_only: bool, seed: int, desc: str, progress: bool, **train):
    deterministic(seed)
    new = copy_model(model)
    if last_only:  # SAC's fine_tune.py: model.train(), an optimiser over the head's parameters only, so the
        # feature layers' batch norms keep updating their statistics (a frozen Keras layer would not)
        train["variables"] = [v for layer in head_layers(new) for v in layer.trainable_variables]
    train.setdefault("loss_fn", _ce_loss)
    sgd_train(new, x, y, recipe=recipe, seed=seed, desc=desc, progress=progress, **train)
    return new


def finetune(
    model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    last_only: bool = False,
    recipe: SGDRecipe = FINETUNE,
    augment: Optional[str] = None,
    seed: int = 0,
    progress: bool = True,
):
    """Finetune-A (all layers) or Finetune-L (``last_only``: the classifier head, :func:`head_layers`) of a copy
    of ``model`` on (``x``, ``y``), the attacker's data with its true labels (SAC ``fine_tune.py``), each batch
    augmented by ``augment`` (see the module docstring)."""
    return _train_copy(
        model,
        x,
        np.asarray(y, np.int64),
        recipe,
        last_only=last_only,
        seed=seed,
        desc="Finetune-L" if last_only else "Finetune-A",
        progress=progress,
        augment=augmentation(augment),
    )


def adversarial_finetune(
    model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    recipe: SGDRecipe = ADV_FINETUNE,
    epsilon: float = PGD_EPSILON,
    step: float = PGD_STEP,
    steps: int = PGD_STEPS,
    max_examples: Optional[int] = None,
    seed: int = 0,
    progress: bool = True,
):
    """A copy of ``model`` adversarially fine-tuned on ``CE(x) + CE(PGD(x))`` with true labels. Not in SAC; the
    PGD is Extract-Adv's, the optimiser the fine-tuning one (lr 5e-4, momentum 0.9), batch 256, 2 epochs
    (``max_examples``: as :func:`extract_adversarial`)."""
    return _train_copy(
        model,
        x,
        np.asarray(y, np.int64),
        recipe,
        last_only=False,
        seed=seed,
        desc="Adv-FT",
        progress=progress,
        max_examples=max_examples,
        **_pgd_pair(epsilon, step, steps),
    )


def transfer(
    model,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    last_only: bool = False,
    recipe: SGDRecipe = TRANSFER,
    seed: int = 0,
    progress: bool = True,
):
    """Transfer-A / Transfer-L (SAC Table 5): a copy of ``model`` whose last layer with weights is replaced by a
    new dense layer of ``num_classes`` outputs (Glorot-uniform from ``seed``, linear), trained on (``x``,
    ``y``) with another label set; all layers, or the new head only (``last_only``). SAC does not publish its
    transfer code; SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 512, 5 epochs is chosen (a new head
    needs a larger rate than fine-tuning's 5e-4)."""
    if num_classes < 2:
        raise ParameterError(f"num_classes must be >= 2, got {num_classes}")
    deterministic(seed)
    base = copy_model(model)
    last = next(l for l in reversed(base.layers) if l.weights)
    if base.layers[-1] is not last:
        raise ParameterError(f"model {model.name}: the last layer must be the one with weights to replace its head")
    K = keras
    out = K.layers.Dense(
        num_classes, name=f"{last.name}_transfer", kernel_initializer=K.initializers.GlorotUniform(seed=seed)
    )(last.input)
    new = K.Model(base.inputs, out, name=f"{model.name}_transfer")
    sgd_train(
        new,
        x,
        np.asarray(y, np.int64),
        _ce_loss,
        recipe,
        seed=seed,
        desc="Transfer-L" if last_only else "Transfer-A",
        progress=progress,
        # as Finetune-L (_train_copy): the new head's variables only, the model in training mode (its batch norms'
        # statistics follow the new data, as an optimiser over the head of a torch model in train() mode)
        variables=list(new.layers[-1].trainable_variables) if last_only else None,
    )
    return new


# -- fine-pruning ---------------------------------------------------------------------------------------------------
def conv_layers(model) -> List[Any]:
    return [l for l in model.layers if type(l).__name__ == "Conv2D"]


def _same_width_bn(model, conv) -> Optional[Any]:
    """The batch norm right after ``conv`` (within two layers) if it normalises the conv's channels, else None
    (a pre-activation network's next batch norm normalises a concatenation, not this conv)."""

    name = _following_bn(model, conv.name)
    if name is None:
        return None
    bn = model.get_layer(name)
    return bn if int(bn.gamma.shape[0]) == int(conv.kernel.shape[-1]) and bn.scale and bn.center else None


def zero_channels(pruned: List[Tuple[Any, Optional[Any], np.ndarray]]) -> None:
    """Set the pruned channels (mask 0) of each ``(conv, its batch norm or None, mask)`` to output 0: the conv's
    kernel and the batch norm's scale and shift."""
    for conv, bn, mask in pruned:
        conv.kernel.assign(conv.kernel * mask)
        if bn is not None:
            bn.gamma.assign(bn.gamma * mask)
            bn.beta.assign(bn.beta * mask)


def pruned_channel_masks(model) -> List[Tuple[Any, Optional[Any], np.ndarray]]:
    """``(conv, its batch norm or None, mask)`` for every conv layer of ``model`` with pruned channels: a channel
    is pruned when its kernel is all zero (as :func:`fine_prune` leaves it; a trained channel is never exactly
    zero)."""
    out = []
    for conv in conv_layers(model):
        kernel = np.asarray(conv.kernel)
        mask = (np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0) > 0).astype(np.float32)
        if not mask.all():
            out.append((conv, _same_width_bn(model, conv), mask))
    return out


def finetune_pruned(
    model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    recipe: SGDRecipe = FINETUNE,
    augment: Optional[str] = None,
    seed: int = 0,
    progress: bool = True,
):
    """A fine-pruning snapshot fine-tuned *after* pruning (Liu et al. 2018, the "fine" of fine-pruning): a copy of
    ``model`` trained on (``x``, ``y``), the attacker's data with its true labels, with its pruned channels
    (:func:`pruned_channel_masks`) held at zero after every step, so that the copy stays as small as the snapshot.
    SAC's ``pruning.py`` fine-tunes only in small steps while pruning (one pass over 2,056 examples every 50
    prunings), which keeps a full-width VGG16 usable but not the width-reduced one of the SAC zoo (chance
    accuracy from 40 % pruned); a thief deploys a pruned model after fine-tuning it back to use. The recipe is
    SAC's own fine-tuning (``fine_tune.py``: :data:`FINETUNE`), at the zoo profile's epochs; chosen before any
    measurement. ``augment``: as :func:`finetune`."""
    aug = augmentation(augment)
    deterministic(seed)  # first: a copy's dropout layers draw their seeds when made
    new = copy_model(model)
    pruned = pruned_channel_masks(new)

    def hold() -> None:
        zero_channels(pruned)

    sgd_train(
        new,
        x,
        np.asarray(y, np.int64),
        _ce_loss,
        recipe,
        seed=seed,
        desc="fine-tuning a pruned copy",
        progress=progress,
        after_step=hold,
        augment=aug,
    )
    return new


def fine_prune(
    model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    max_fraction: float = FINE_PRUNE_MAX_FRACTION,
    snapshots: int = FINE_PRUNE_SNAPSHOTS,
    refresh: int = FINE_PRUNE_REFRESH,
    finetune_every: int = FINE_PRUNE_FINETUNE_EVERY,
    finetune_examples: int = FINE_PRUNE_FINETUNE_EXAMPLES,
    learning_rate: float = FINE_PRUNE_LR,
    batch_size: int = FINE_PRUNE_BATCH,
    augment: Optional[str] = None,
    seed: int = 0,
    progress: bool = True,
) -> List[Tuple[float, Any]]:
    """Fine-pruning as SAC's ``pruning.py`` (see the module docstring). Returns ``[(pruned fraction, model)]``,
    a copy each time another ``1/snapshots`` of all conv channels is pruned, up to ``max_fraction``; the input
    model is not modified. ``augment``: every batch drawn (the activity batches and the fine-tuning passes') is
    augmented, as SAC's attacker loader does."""
    aug = augmentation(augment)
    check_number(max_fraction, "max_fraction", 0.0, 1.0, low_open=True, high_open=True)
    for name, v in (
        ("snapshots", snapshots),
        ("refresh", refresh),
        ("finetune_every", finetune_every),
        ("finetune_examples", finetune_examples),
        ("batch_size", batch_size),
    ):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ParameterError(f"{name} must be a positive integer, got {v}")
    deterministic(seed)
    new = copy_model(model)
    convs = conv_layers(new)
    if not convs:
        raise ParameterError(f"model {model.name} has no Conv2D layer to prune")
    for layer in new.layers:  # PyTorch's running-statistics momentum (0.1 there), as SAC's fine-tuning steps use
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = FINE_PRUNE_BN_MOMENTUM
    sizes = np.array([int(c.kernel.shape[-1]) for c in convs])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    total = int(sizes.sum())
    masks = [np.ones(s, np.float32) for s in sizes]
    bns = [_same_width_bn(new, c) for c in convs]
    # a channel's activation: max(0, its batch norm's output) where one follows, else its conv's output
    probe = keras.Model(new.inputs, [(b if b is not None else c).output for c, b in zip(convs, bns)])
    post = [b is not None for b in bns]

    def apply_masks() -> None:
        zero_channels([(c, bn, m) for c, bn, m in zip(convs, bns, masks) if not m.all()])

    rng = np.random.default_rng(seed)
    y = np.asarray(y, np.int64)
    ft = SGDRecipe(learning_rate, epochs=1, momentum=0.0, weight_decay=0.0, batch_size=batch_size)
    pruned = np.zeros(total, bool)
    activity = np.zeros(total)
    out: List[Tuple[float, Any]] = []
    # snapshot j (1 ... floor(max_fraction * snapshots)) once round(j * total / snapshots) channels are pruned
    marks = [int(round(j * total / snapshots)) for j in range(1, int(math.floor(max_fraction * snapshots + 1e-9)) + 1)]
    marks = sorted({m for m in marks if m >= 1})
    n_prune = marks[-1] if marks else 0
    with progress_bar(n_prune, desc="fine-pruning", enabled=progress, unit="channel") as bar:
        for i in range(n_prune):
            if i % refresh == 0:  # one attacker batch's mean |activation| per channel
                batch = x[rng.choice(len(x), size=min(batch_size, len(x)), replace=False)]
                batch = batch if aug is None else aug(batch, rng)
                acts = probe(tf.constant(batch), training=False)
                acts = acts if isinstance(acts, (list, tuple)) else [acts]
                activity = np.concatenate(
                    [
                        np.mean(np.maximum(np.asarray(a), 0.0) if p else np.abs(np.asarray(a)), axis=(0, 1, 2))
                        for a, p in zip(acts, post)
                    ]
                )
            idx = int(np.flatnonzero(~pruned)[np.argmin(activity[~pruned])])
            pruned[idx] = True
            layer = int(np.searchsorted(offsets, idx, side="right") - 1)
            masks[layer][idx - offsets[layer]] = 0.0
            apply_masks()
            if i % finetune_every == 0:
                sgd_train(
                    new,
                    x,
                    y,
                    _ce_loss,
                    ft,
                    seed=seed + i,
                    progress=False,
                    after_step=apply_masks,
                    max_examples=finetune_examples,
                    augment=aug,
                )
            if i + 1 in marks:
                out.append((round((i + 1) / total, 4), copy_model(new)))
            bar.update(1)
    return out
