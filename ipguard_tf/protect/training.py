"""Training an anti-piracy model (Chen & Wu 2018, slide "Training Formulation") and measuring it.

The model ``f`` and the transform's own variables (the Learned perturbation, the Generator's weights) minimise

    E = alpha * E_p + beta * E_r + gamma * ||x_p - x_r||_2^2,
    E_p = -sum_i p_i log q_{p,i}   (cross-entropy on the processed input x_p = T(x_r)),
    E_r =  sum_i p_i q_{r,i}       (the softmax probability of the true class on the raw input x_r),

each averaged over the batch (the squared distance summed over an image's pixels), so that ``f`` is accurate on
``x_p`` and wrong on ``x_r``. With ``transform=None`` the same loop trains the slides' *baseline* ("a regular DNN
with the same architecture"): ``E = E_p`` on raw inputs.

Choices the slides leave open, fixed here before any run:

* ``alpha = beta = 1``: the two accuracy terms equally weighted (both are O(1) per example).
* ``gamma = 0.01``: at the Fixed parameters' distortion (0.002 a pixel, 784 pixels: about 1.6 an image) the
  distortion term is 0.016, a tenth of a converged cross-entropy, so it bounds the Learned perturbation and the
  Generator's output without dominating the accuracy terms; the resulting PSNR is reported with every model.
* Optimiser and epochs: the project's Fashion-MNIST recipe for every architecture (Adam, learning rate 1e-3,
  batch 128; :data:`~ipguard_tf.zoo.train.RECIPES`: 8 epochs for the simple CNN, 10 for ResNet-20), the same
  for the baseline and the protected models, and for ``f`` and the transform's variables (one optimiser).
* The processed and raw halves of a batch go through ``f`` in one call (one batch of twice the size), so that
  batch normalisation sees both, as it will at test time.

Training is resumable: after every epoch the model's weights, the transform's values, the optimiser's state
and the history are written atomically to a checkpoint (a :class:`~ipguard_tf.io.checkpoint.StateFile` that
records the model, transform, settings and seed; a checkpoint of another run is refused); a rerun continues
from the last finished epoch. Each epoch's batch order is drawn from (seed, epoch), so a resumed run visits
the same batches as an uninterrupted one (dropout's random stream differs after a resume).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import keras
import numpy as np
import tensorflow as tf

from ipguard_tf.core import constants as C
from ipguard_tf.core.checks import check_number
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.io.checkpoint import StateFile
from ipguard_tf.io.progress import progress_bar
from ipguard_tf.protect.transforms import Transform, psnr
from ipguard_tf.zoo.train import evaluate_accuracy as accuracy

log = logging.getLogger(__name__)

ALPHA = C.ANTIPIRACY_ALPHA
BETA = C.ANTIPIRACY_BETA
GAMMA = C.ANTIPIRACY_GAMMA
CHECKPOINT_SCHEMA = "ipguard_tf.protect-training/1"


@dataclass(frozen=True)
class ProtectSettings:
    """The anti-piracy loss weights and the optimiser settings (see the module docstring for the choices)."""

    alpha: float = ALPHA
    beta: float = BETA
    gamma: float = GAMMA
    epochs: int = 8
    batch_size: int = 128
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("beta", "gamma"):
            check_number(getattr(self, name), name, 0.0)
        check_number(self.alpha, "alpha (without E_p the model learns nothing)", 0.0, low_open=True)
        for name in ("epochs", "batch_size"):
            check_number(getattr(self, name), name, 1, integer=True)
        check_number(self.learning_rate, "learning_rate", 0.0, 1.0, low_open=True, high_open=True)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _identity(model, transform: Optional[Transform], settings: "ProtectSettings", seed: int) -> Dict[str, Any]:
    """What a checkpoint must match to be resumed: the model's name and size, the transform, the settings (but
    the number of epochs, so that a finished run can be trained further) and the seed."""
    kept = {k: v for k, v in settings.as_dict().items() if k != "epochs"}
    return {
        "model": model.name,
        "parameters": int(model.count_params()),
        "seed": int(seed),
        "transform": None if transform is None else transform.params(),
        "settings": kept,
    }


def _checkpoint_file(path: Path, identity: Dict[str, Any]) -> StateFile:
    """The training checkpoint: arrays ``model_I`` (weights), ``transform_NAME``, ``opt_I`` (the optimiser's
    variables); scalars ``epoch`` (epochs done) and ``history``. Its errors are :class:`ParameterError`."""
    return StateFile(
        path,
        identity,
        "training checkpoint",
        schema=CHECKPOINT_SCHEMA,
        error=ParameterError,
        other="another training run (model, transform, seed or settings differ)",
        hint="rerun with the settings it was made with",
    )


def _save_checkpoint(
    store: StateFile, model, transform: Optional[Transform], optimizer, epoch: int, history: list
) -> None:
    arrays = {f"model_{i}": w for i, w in enumerate(model.get_weights())}
    if transform is not None:
        arrays.update({f"transform_{k}": v for k, v in transform.arrays().items()})
    arrays.update({f"opt_{i}": v.numpy() for i, v in enumerate(optimizer.variables)})
    store.save(arrays, {"epoch": epoch, "history": history})


def _load_checkpoint(store: StateFile, model, transform: Optional[Transform], optimizer, variables) -> tuple:
    """(epochs done, history) restored from ``store`` into the model, the transform and the optimiser; (0, [])
    when there is no checkpoint yet."""
    saved = store.load()
    if saved is None:
        return 0, []
    arrays, state = saved
    try:
        model.set_weights([arrays[f"model_{i}"] for i in range(len(model.get_weights()))])
        if transform is not None:
            values = {k[len("transform_") :]: a for k, a in arrays.items() if k.startswith("transform_")}
            restored = type(transform).from_arrays(transform.params(), values)
            for dst, src in zip(transform.trainable_variables, restored.trainable_variables):
                dst.assign(src)
        optimizer.build(variables)
        for i, v in enumerate(optimizer.variables):
            v.assign(arrays[f"opt_{i}"])
        return int(state["epoch"]), list(state["history"])
    except (KeyError, TypeError, ValueError) as exc:
        raise store.unreadable(f"{type(exc).__name__}: weights do not fit") from None


def train_protected(
    model,
    transform: Optional[Transform],
    x: np.ndarray,
    y: np.ndarray,
    settings: ProtectSettings,
    *,
    seed: int,
    checkpoint: Optional[Union[str, Path]] = None,
    progress: bool = True,
    desc: str = "protect",
) -> Dict[str, Any]:
    """Train ``model`` (logits; in place) and ``transform``'s variables with the anti-piracy loss on (``x``, ``y``)
    (raw inputs in [0, 1], integer labels); ``transform=None`` trains the baseline. Returns the history (per
    epoch: mean loss and its three terms, seconds). With ``checkpoint`` a path, resumes from it and updates it
    after every epoch."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y).reshape(-1).astype(np.int32)
    if len(x) != len(y) or len(x) == 0:
        raise ParameterError(f"training data has {len(x)} inputs and {len(y)} labels")
    variables = list(model.trainable_variables) + (list(transform.trainable_variables) if transform else [])
    optimizer = keras.optimizers.Adam(settings.learning_rate)
    a, b, g = float(settings.alpha), float(settings.beta), float(settings.gamma)

    @tf.function(reduce_retracing=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            if transform is None:
                logits_p = model(xb, training=True)
                e_r = tf.constant(0.0)
                dist = tf.constant(0.0)
            else:
                xp = transform.apply(xb)
                n = tf.shape(xb)[0]
                logits = model(tf.concat([xp, xb], 0), training=True)
                logits_p, logits_r = logits[:n], logits[n:]
                q_r = tf.nn.softmax(logits_r)
                e_r = tf.reduce_mean(tf.gather(q_r, yb, batch_dims=1))
                dist = tf.reduce_mean(tf.reduce_sum(tf.square(xp - xb), axis=[1, 2, 3]))
            e_p = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits_p))
            loss = a * e_p + b * e_r + g * dist
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(gr, v) for gr, v in zip(grads, variables) if gr is not None])
        return tf.stack([loss, e_p, e_r, dist])

    store = None
    if checkpoint is not None:
        store = _checkpoint_file(Path(checkpoint), _identity(model, transform, settings, seed))
    start, history = 0, []
    if store is not None and store.exists():
        start, history = _load_checkpoint(store, model, transform, optimizer, variables)
        log.info("resuming %s from %s after epoch %d of %d", desc, store.path, start, settings.epochs)
    per_epoch = math.ceil(len(x) / settings.batch_size)
    with progress_bar(
        per_epoch * settings.epochs, desc=desc, enabled=progress, unit="step", initial=per_epoch * start
    ) as bar:
        for epoch in range(start, settings.epochs):
            t0 = time.perf_counter()
            order = np.random.default_rng([seed, epoch]).permutation(len(x))
            sums = np.zeros(4)
            for s in range(0, len(x), settings.batch_size):
                idx = order[s : s + settings.batch_size]
                out = step(tf.constant(x[idx]), tf.constant(y[idx])).numpy()
                sums += out * len(idx)
                bar.update(1)
            m = sums / len(x)
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": float(m[0]),
                    "e_p": float(m[1]),
                    "e_r": float(m[2]),
                    "distortion": float(m[3]),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            bar.set_postfix(loss=f"{m[0]:.3f}", e_r=f"{m[2]:.3f}")
            log.info(
                "%s epoch %d/%d: loss %.4f (E_p %.4f, E_r %.4f, distortion %.3f), %.0f s",
                desc,
                epoch + 1,
                settings.epochs,
                *m,
                history[-1]["seconds"],
            )
            if store is not None:
                _save_checkpoint(store, model, transform, optimizer, epoch + 1, history)
    return {"settings": settings.as_dict(), "history": history}


def evaluate_protection(model, transform: Optional[Transform], x: np.ndarray, y: np.ndarray) -> Dict[str, Any]:
    """The slides' table entries for one model: ``authorized`` accuracy (on ``T(x)``; on ``x`` for a baseline),
    ``unauthorized`` accuracy (on raw ``x``) and the ``psnr`` (dB) of ``T(x)`` against ``x`` (None for a
    baseline, which has no transform)."""

    x = np.asarray(x, np.float32)
    if transform is None:
        acc = accuracy(model, x, y)
        return {"authorized": acc, "unauthorized": acc, "psnr": None}
    xp = transform(x)
    return {"authorized": accuracy(model, xp, y), "unauthorized": accuracy(model, x, y), "psnr": psnr(x, xp)}
