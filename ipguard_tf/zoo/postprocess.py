"""Post-processings of the target (paper Section 5.1.2) as pure functions ``(model, data, params) -> new model``.

The input model is never modified: each function works on a copy. Models are Keras 3 models built by
:mod:`ipguard_tf.zoo.architectures`; weight pruning goes through a Keras 2 twin because TF-MOT only prunes
tf_keras models, and comes back as a Keras 3 model.

Training details the paper leaves open (documented choices): fine-tuning and retraining use the full training
set, Adam, batch 128. Fine-tuning all layers (FTAL) and the retraining after pruning (WP, FP) use learning rate
1e-4, the usual fine-tuning rate; the re-initialised head (RTLL, RTAL) and FTLL use 1e-3, the rate the
Fashion-MNIST target was trained with (RTAL at 1e-4 for 2 epochs stayed 4 points below the target's accuracy,
outside the paper's 3 % budget); 2 epochs each (RTLL 3).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import keras
import numpy as np

from ipguard_tf.core.checks import check_number
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.models import tflite
from ipguard_tf.zoo.architectures import twin

log = logging.getLogger(__name__)

FT_LR_LAST = 1e-3
FT_LR_ALL = 1e-4
FT_EPOCHS = 2
RTLL_EPOCHS = 3
PRUNE_RETRAIN_EPOCHS = 2
PRUNE_RETRAIN_LR = 1e-4


def copy_model(model: keras.Model) -> keras.Model:
    """An independent, uncompiled copy (same architecture, copied weights) of a Keras 3 model."""
    new = type(model).from_config(model.get_config())
    new.set_weights(model.get_weights())
    return new


def last_layer(model) -> Any:
    """The last layer with weights (the classifier's final fully connected layer)."""
    for layer in reversed(model.layers):
        if layer.weights:
            return layer
    raise ParameterError(f"model {model.name} has no layer with weights")


def _num_train(dataset) -> int:
    n = getattr(dataset, "num_train", None)
    return int(n) if n is not None else len(dataset.x_train)


def _fit(
    model,
    dataset,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    verbose: int,
    callbacks=None,
    loss=None,
    K=keras,
    seed: int = 0,
) -> None:
    """Train on the dataset's training split: arrays (``x_train``/``y_train``) or, for data too large for
    memory such as ImageNet, the ``tf.data`` pipeline its ``train_dataset(batch_size, seed)`` returns."""
    model.compile(
        optimizer=K.optimizers.Adam(learning_rate),
        loss=loss or K.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    with contextlib.redirect_stdout(sys.stderr):  # Keras' progress bar on stderr
        if hasattr(dataset, "train_dataset"):
            model.fit(
                dataset.train_dataset(batch_size, seed), epochs=epochs, verbose=verbose, callbacks=callbacks or []
            )
        else:
            model.fit(
                dataset.x_train,
                dataset.y_train,
                batch_size=batch_size,
                epochs=epochs,
                shuffle=True,
                verbose=verbose,
                callbacks=callbacks or [],
            )


@contextlib.contextmanager
def _train_last_only(model):
    """Within the block only the last layer is trainable; afterwards every layer has its own flag back (a layer
    frozen by design, e.g. the ImageNet models' fixed ``pixel_preprocess`` convolution, stays frozen)."""
    last = last_layer(model)
    before = [layer.trainable for layer in model.layers]
    for layer in model.layers:
        layer.trainable = layer is last
    try:
        yield
    finally:
        for layer, flag in zip(model.layers, before):
            layer.trainable = flag


def _reinit_last(model, seed: int) -> None:
    last = last_layer(model)
    init = keras.initializers.GlorotUniform(seed=seed)
    new = [np.asarray(init(w.shape)) if w.ndim > 1 else np.zeros(w.shape, w.dtype) for w in last.get_weights()]
    last.set_weights(new)


def _retrain_copy(
    model,
    dataset,
    *,
    reinit_last: bool,
    last_only: bool,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    verbose: int,
):
    """A copy of ``model`` trained on the training data: its last layer re-initialised first if ``reinit_last``,
    only the last layer trained if ``last_only`` (the input model is not touched)."""
    keras.utils.set_random_seed(seed)
    new = copy_model(model)
    if reinit_last:
        _reinit_last(new, seed)
    with _train_last_only(new) if last_only else contextlib.nullcontext():
        _fit(new, dataset, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, verbose=verbose)
    return new


def _retraining(name: str, doc: str, *, reinit_last: bool, last_only: bool, epochs: int, learning_rate: float):
    """One of the four retraining post-processings as a pure function ``(model, dataset, **params) -> model``."""

    def post_process(
        model,
        dataset,
        *,
        epochs: int = epochs,
        learning_rate: float = learning_rate,
        batch_size: int = 128,
        seed: int = 0,
        verbose: int = 1,
    ):
        return _retrain_copy(
            model,
            dataset,
            reinit_last=reinit_last,
            last_only=last_only,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            seed=seed,
            verbose=verbose,
        )

    post_process.__name__ = post_process.__qualname__ = name
    post_process.__doc__ = doc
    return post_process


fine_tune_last_layer = _retraining(
    "fine_tune_last_layer",
    "FTLL: fine-tune only the last (fully connected) layer on the training data; all others frozen.",
    reinit_last=False,
    last_only=True,
    epochs=FT_EPOCHS,
    learning_rate=FT_LR_LAST,
)
fine_tune_all_layers = _retraining(
    "fine_tune_all_layers",
    "FTAL: fine-tune all layers on the training data.",
    reinit_last=False,
    last_only=False,
    epochs=FT_EPOCHS,
    learning_rate=FT_LR_ALL,
)
retrain_last_layer = _retraining(
    "retrain_last_layer",
    "RTLL: re-initialise the last layer (Glorot uniform, zero bias) and train only it.",
    reinit_last=True,
    last_only=True,
    epochs=RTLL_EPOCHS,
    learning_rate=FT_LR_LAST,
)
retrain_all_layers = _retraining(
    "retrain_all_layers",
    "RTAL: re-initialise the last layer and train all layers.",
    reinit_last=True,
    last_only=False,
    epochs=FT_EPOCHS,
    learning_rate=FT_LR_LAST,
)


# -- weight pruning (TF-MOT) --------------------------------------------------------------------------------------
def _prunable_kernels(model) -> List[Tuple[str, np.ndarray]]:
    out = []
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "Dense", "DepthwiseConv2D", "SeparableConv2D"):
            out.append((layer.name, np.asarray(layer.get_weights()[0])))
    return out


def measured_sparsity(model) -> float:
    """Fraction of exactly-zero weights over the kernels of the Conv2D and Dense layers (what WP prunes)."""
    kernels = _prunable_kernels(model)
    total = sum(k.size for _, k in kernels)
    return float(sum(np.count_nonzero(k == 0) for _, k in kernels)) / max(1, total)


def weight_prune(
    model,
    dataset,
    sparsity: float,
    *,
    architecture: str,
    epochs: int = PRUNE_RETRAIN_EPOCHS,
    learning_rate: float = PRUNE_RETRAIN_LR,
    batch_size: int = 128,
    seed: int = 0,
    verbose: int = 1,
):
    """WP (Han et al. 2015): prune the fraction ``sparsity`` of smallest-magnitude weights of every Conv2D and
    Dense kernel with TF-MOT ``prune_low_magnitude`` (``ConstantSparsity``, per layer, from step 0), retrain with
    the mask held, ``strip_pruning``, and return a Keras 3 model with the pruned weights.

    The mask is updated every ``frequency`` steps with ``frequency`` at most a quarter of the training steps: a
    frequency larger than the number of steps would silently prune nothing. The measured sparsity is checked
    against ``sparsity`` (to within 0.01) before returning.
    """
    check_number(sparsity, "sparsity", 0.0, 1.0, low_open=True, high_open=True)
    import tensorflow_model_optimization as tfmot  # sets TF_USE_LEGACY_KERAS=1 in this process
    import tf_keras

    keras.utils.set_random_seed(seed)
    tf_keras.utils.set_random_seed(seed)
    shape, classes = dataset.input_shape, dataset.num_classes
    k2 = twin(model, architecture, shape, classes, tf_keras)
    steps = int(np.ceil(_num_train(dataset) / batch_size)) * epochs
    frequency = max(1, min(100, steps // 4))
    schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=frequency)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(k2, pruning_schedule=schedule)
    _fit(
        pruned,
        dataset,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        verbose=verbose,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        K=tf_keras,
    )
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    new = twin(stripped, architecture, shape, classes, keras)
    got = measured_sparsity(new)
    if abs(got - sparsity) > 0.01:
        raise RuntimeError(f"weight pruning reached sparsity {got:.4f}, not {sparsity}")
    return new


# -- filter pruning (Li et al. 2017) -------------------------------------------------------------------------------
@dataclass
class FilterMask:
    """Which output filters of one conv layer are pruned (and the batch-norm layer that follows it, if any)."""

    conv: str
    pruned: np.ndarray  # indices of pruned filters
    n_filters: int
    bn: Optional[str] = None


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history is not None else None


def _inputs_of(layer) -> list:
    try:
        node = layer._inbound_nodes[0]
    except (AttributeError, IndexError):
        return []
    tensors = getattr(node, "input_tensors", None)
    if tensors is None:
        tensors = getattr(node, "arguments", None)
        tensors = list(tensors.keras_tensors) if tensors is not None else []
    return list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]


def residual_end_convs(model) -> set:
    """Convs whose output reaches an ``Add`` through single-input layers only (batch norm, activation): the last
    conv of each residual branch and the shortcut projections (or a stem feeding an identity shortcut)."""
    ends = set()
    for layer in model.layers:
        if type(layer).__name__ != "Add":
            continue
        for t in _inputs_of(layer):
            op = _producer(t)
            while op is not None and type(op).__name__ != "Conv2D":
                ins = _inputs_of(op)
                if len(ins) != 1 or type(op).__name__ in ("Add", "Concatenate", "InputLayer"):
                    op = None
                    break
                op = _producer(ins[0])
            if op is not None:
                ends.add(op.name)
    return ends


def eligible_conv_layers(model) -> List[str]:
    """Conv layers filter pruning may touch (paper Section 5.1.2, after Li et al. 2017): every trainable
    Conv2D except the last conv of each residual block (and the shortcut projections), found from the graph:
    a conv whose output flows into an ``Add`` through batch norm / activation only is left alone. Fixed
    (non-trainable) convs, such as an input-preprocessing 1x1 conv, are not pruned either."""
    ends = residual_end_convs(model)
    return [l.name for l in model.layers if type(l).__name__ == "Conv2D" and l.trainable and l.name not in ends]


def _following_bn(model, conv_name: str) -> Optional[str]:
    layers = model.layers
    for i, l in enumerate(layers):
        if l.name == conv_name:
            for nxt in layers[i + 1 : i + 3]:
                if type(nxt).__name__ == "BatchNormalization":
                    return nxt.name
            return None
    return None


def filter_masks(model, fraction: float) -> List[FilterMask]:
    """For each eligible conv layer, the ``round(fraction * filters)`` filters with the smallest L1 norm."""
    masks = []
    for name in eligible_conv_layers(model):
        kernel = np.asarray(model.get_layer(name).get_weights()[0])
        n = kernel.shape[-1]
        m = int(round(fraction * n))
        l1 = np.abs(kernel).reshape(-1, n).sum(axis=0)
        pruned = np.sort(np.argsort(l1, kind="stable")[:m])
        masks.append(FilterMask(name, pruned, n, _following_bn(model, name)))
    return masks


def apply_filter_masks(model, masks: List[FilterMask]) -> None:
    """Zero the pruned filters' kernels and biases (and the following batch norm's gamma and beta, so the pruned
    channel outputs exactly 0, as if the filter were removed)."""
    for fm in masks:
        if not len(fm.pruned):
            continue
        layer = model.get_layer(fm.conv)
        ws = layer.get_weights()
        ws[0][..., fm.pruned] = 0.0
        if len(ws) > 1:
            ws[1][fm.pruned] = 0.0
        layer.set_weights(ws)
        if fm.bn:
            bn = model.get_layer(fm.bn)
            bw = bn.get_weights()  # gamma, beta, moving mean, moving variance
            bw[0][fm.pruned] = 0.0
            bw[1][fm.pruned] = 0.0
            bn.set_weights(bw)


class _KeepPruned(keras.callbacks.Callback):
    def __init__(self, masks):
        super().__init__()
        self.masks = masks

    def on_train_batch_end(self, batch, logs=None):
        apply_filter_masks(self.model, self.masks)


def pruned_filter_fractions(model, masks: List[FilterMask]) -> Dict[str, float]:
    """Measured fraction of all-zero filters in each masked layer."""
    out = {}
    for fm in masks:
        kernel = np.asarray(model.get_layer(fm.conv).get_weights()[0])
        zero = np.all(kernel.reshape(-1, fm.n_filters) == 0, axis=0)
        out[fm.conv] = float(zero.mean())
    return out


def filter_prune(
    model,
    dataset,
    fraction: float,
    *,
    epochs: int = PRUNE_RETRAIN_EPOCHS,
    learning_rate: float = PRUNE_RETRAIN_LR,
    batch_size: int = 128,
    seed: int = 0,
    verbose: int = 1,
):
    """FP (Li et al. 2017): in each eligible conv layer zero the fraction ``fraction`` of filters with the smallest
    L1 norm, then retrain; the pruned filters are re-zeroed after every training step, so they stay pruned.

    Returns ``(model, fractions)`` with the measured pruned-filter fraction of each eligible layer.
    """
    check_number(fraction, "fraction", 0.0, 1.0, low_open=True, high_open=True)
    keras.utils.set_random_seed(seed)
    new = copy_model(model)
    masks = filter_masks(new, fraction)
    if not masks:
        raise ParameterError(f"model {model.name} has no conv layer eligible for filter pruning")
    apply_filter_masks(new, masks)
    _fit(
        new,
        dataset,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        verbose=verbose,
        callbacks=[_KeepPruned(masks)],
    )
    apply_filter_masks(new, masks)
    return new, pruned_filter_fractions(new, masks)


def quantize(model, dataset, mode: str, *, calibration_examples: Optional[int] = None, name: Optional[str] = None):
    """A quantized TFLite copy of ``model`` (issue 14: what a thief ships in a mobile app): TensorFlow's converter
    in ``mode`` float16 (weights stored as float16) or int8 (full-integer; calibrated on the first
    ``calibration_examples`` training inputs, default :data:`ipguard_tf.models.tflite.DEFAULT_CALIBRATION_EXAMPLES`),
    or float32 (conversion only). Returns a :class:`ipguard_tf.models.tflite.TFLiteModel` (its bytes in ``.content``);
    the input model is not modified."""

    n = tflite.DEFAULT_CALIBRATION_EXAMPLES if calibration_examples is None else int(calibration_examples)
    rep = dataset.x_train[:n] if mode == "int8" else None
    content = tflite.convert(model, mode, rep, calibration_examples=n)
    return tflite.TFLiteModel(content, name=name or f"{getattr(model, 'name', 'model')}_{mode}")
