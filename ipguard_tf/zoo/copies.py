"""Cheap copies of any Keras 2 or Keras 3 model, the kind an owner would call pirated (issue 30): magnitude-pruned
without retraining, with small weight noise, converted to TFLite float16 / int8, and (with labelled data) with the
last layer fine-tuned. ``ipguard fingerprint`` tunes its setting on them before any suspect is seen.

Unlike :mod:`ipguard_tf.zoo.postprocess` (the paper's post-processings of the project's own architectures, trained
for epochs), these work on a model of any architecture the owner brings, take seconds, and never modify the input
model. The settings are ours, chosen before measuring (the paper's suspects are retrained copies, Section 5.1.2):

* pruning: in every kernel (weights named ``*kernel``: Dense, Conv, depthwise/pointwise kernels) the fraction
  ``p`` of smallest-magnitude entries is set to 0, per layer, no retraining (:data:`PRUNE_FRACTIONS` 10 % and 30 %);
* noise: every kernel gets Gaussian noise of :data:`NOISE_SCALE` times that kernel's own standard deviation;
* TFLite float16 and int8 (full-integer, calibrated on :data:`~ipguard_tf.models.tflite.DEFAULT_CALIBRATION_EXAMPLES`
  of the owner's examples, or on uniform inputs without data), TensorFlow's converter;
* last-layer fine-tuning: :data:`FINETUNE_EPOCHS` epoch of Adam at :data:`FINETUNE_LR` on at most
  :data:`FINETUNE_EXAMPLES` labelled examples, only the last layer with weights trainable (the paper's FTLL).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from ipguard_tf.core.checks import check_number
from ipguard_tf.core.errors import ModelError
from ipguard_tf.models import tflite
from ipguard_tf.models.classifier import _keras_module_of, as_classifier, keras_logits_model

log = logging.getLogger(__name__)

PRUNE_FRACTIONS = (0.1, 0.3)
NOISE_SCALE = 0.05
FINETUNE_EPOCHS = 1
FINETUNE_LR = 1e-3
FINETUNE_EXAMPLES = 10_000
BATCH = 128


@dataclass
class Copy:
    """One self-made copy: its name, the model (Keras, or a TFLite model), what was done and with what."""

    name: str
    model: Any
    kind: str
    params: Dict[str, Any] = field(default_factory=dict)
    accuracy: Optional[float] = None
    accepted: bool = True
    note: str = ""

    def record(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "params": dict(self.params),
            "accuracy": self.accuracy,
            "accepted": self.accepted,
            "note": self.note,
        }


def accuracy_of(model: Any, x: np.ndarray, y: np.ndarray, input_scale: float = 1.0) -> float:
    """Accuracy on ``(x, y)`` (``x`` in [0, 1], times ``input_scale`` before the model) of any model that
    :func:`as_classifier` takes (a classifier is used as it is, with its own input scale)."""
    pred = as_classifier(model, input_scale=input_scale).predict_labels(x)
    return float(np.mean(pred == np.asarray(y).reshape(-1)))


def clone_with_weights(model: Any) -> Any:
    """An uncompiled copy of a Keras 2 or 3 functional/Sequential model with the same weights."""
    K = _keras_module_of(model)
    try:
        new = K.models.clone_model(model)
    except Exception as exc:  # subclassed models cannot be cloned
        raise ModelError(
            f"{getattr(model, 'name', 'model')} cannot be cloned ({type(exc).__name__}); the owner's path needs a "
            "functional or Sequential Keras model"
        ) from None
    new.set_weights(model.get_weights())
    return new


def _kernels(model: Any) -> List[Any]:
    return [w for w in model.weights if str(getattr(w, "path", w.name)).split("/")[-1].split(":")[0].endswith("kernel")]


def magnitude_pruned(model: Any, fraction: float) -> Any:
    """A copy with the ``fraction`` of smallest-magnitude entries of each kernel set to 0 (no retraining)."""
    check_number(fraction, "fraction", 0.0, 1.0, high_open=True)
    new = clone_with_weights(model)
    for w in _kernels(new):
        a = np.asarray(w.numpy())
        k = int(np.floor(fraction * a.size))
        if k == 0:
            continue
        cut = np.partition(np.abs(a).reshape(-1), k - 1)[k - 1]
        a = np.where(np.abs(a) <= cut, 0.0, a).astype(a.dtype)
        w.assign(a)
    return new


def noisy(model: Any, scale: float = NOISE_SCALE, seed: int = 0) -> Any:
    """A copy whose kernels carry Gaussian noise of ``scale`` times each kernel's standard deviation."""
    check_number(scale, "scale", 0.0)
    rng = np.random.default_rng(seed)
    new = clone_with_weights(model)
    for w in _kernels(new):
        a = np.asarray(w.numpy())
        w.assign((a + rng.normal(0.0, scale * float(a.std()), a.shape)).astype(a.dtype))
    return new


def last_layer_finetuned(
    model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int = FINETUNE_EPOCHS, lr: float = FINETUNE_LR, seed: int = 0
) -> Any:
    """A copy with only its last layer with weights trained on ``(x, y)`` (the paper's FTLL, Section 5.1.2)."""
    K = _keras_module_of(model)
    K.utils.set_random_seed(seed)
    new = clone_with_weights(model)
    last = next((layer for layer in reversed(new.layers) if layer.weights), None)
    if last is None:
        raise ModelError(f"{new.name} has no layer with weights")
    for layer in new.layers:
        layer.trainable = layer is last
    softmax = keras_logits_model(new)[1] != "no softmax head"
    new.compile(optimizer=K.optimizers.Adam(lr), loss=K.losses.SparseCategoricalCrossentropy(from_logits=not softmax))
    with contextlib.redirect_stdout(sys.stderr):
        new.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0)
    return new


def cheap_copies(
    model: Any,
    *,
    x: Optional[np.ndarray] = None,
    y: Optional[np.ndarray] = None,
    input_scale: float = 1.0,
    seed: int = 0,
) -> List[Copy]:
    """The self-made copies of ``model`` (see the module docstring): pruned 10 % and 30 %, noisy, TFLite float16 and
    int8 (calibrated on ``x`` or, without it, uniform [0, 1] inputs), and fine-tuned last layer when ``x`` and
    ``y`` are given. ``x`` is in [0, 1] (times ``input_scale`` before the model, as everywhere). A conversion that
    fails is logged and left out."""
    copies = [
        Copy(f"pruned-{int(round(100 * p))}", magnitude_pruned(model, p), "magnitude pruning", {"fraction": p})
        for p in PRUNE_FRACTIONS
    ]
    copies.append(Copy("noise", noisy(model, NOISE_SCALE, seed), "weight noise", {"scale": NOISE_SCALE, "seed": seed}))
    shape = tuple(int(d) for d in model.input_shape[1:])
    rep = x if x is not None else np.random.default_rng(seed).random((tflite.DEFAULT_CALIBRATION_EXAMPLES, *shape))
    rep = (np.asarray(rep[: tflite.DEFAULT_CALIBRATION_EXAMPLES], np.float32)) * np.float32(input_scale)
    for mode in ("float16", "int8"):
        try:
            content = tflite.convert(model, mode, rep if mode == "int8" else None)
        except ModelError as exc:
            log.warning("TFLite %s copy left out: %s", mode, exc)
            continue
        params: Dict[str, Any] = {"mode": mode}
        if mode == "int8":
            params["calibration"] = "owner data" if x is not None else "uniform"
        copies.append(Copy(f"tflite-{mode}", tflite.TFLiteModel(content, name=f"tflite-{mode}"), "TFLite", params))
    if x is not None and y is not None:
        n = min(len(x), FINETUNE_EXAMPLES)
        xs = np.asarray(x[:n], np.float32) * np.float32(input_scale)
        ft = last_layer_finetuned(model, xs, y[:n], seed=seed)
        copies.append(
            Copy(
                "finetune-last",
                ft,
                "last-layer fine-tuning",
                {"epochs": FINETUNE_EPOCHS, "learning_rate": FINETUNE_LR, "examples": n, "seed": seed},
            )
        )
    return copies
