"""Independent models of the owner's own architecture (issue 30): the negatives a calibrated verdict needs, when the
owner has none. Negative ``i`` is the target's architecture (a Keras clone: same layers, fresh weights drawn with
seed ``i``) trained from scratch on the owner's labelled training split with :data:`RECIPE`; it never sees the
target's weights or labels.

The recipe is ours (the paper trains its negatives with each architecture's own recipe, Section 5.1.2; an owner's
architecture has no recipe we know): Adam at 1e-3, batch 128, :data:`EPOCHS` epochs, no augmentation, inputs as the
target takes them. Each negative's test accuracy is recorded: a negative far below the target is a weak stand-in for
an independent model, and the report says so.

Trained negatives are saved (``negative-<seed>.keras``, or ``.h5`` for Keras 2 models) with a JSON record of the
recipe beside them, so a re-run after an interruption reuses the ones already trained and a third party can
re-calibrate with ``ipguard calibrate --negatives FOLDER``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ipguard_tf.core.constants import NEGATIVE_EPOCHS
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.io.files import atomic_path, atomic_write_bytes
from ipguard_tf.models.classifier import _is_tf_keras_model, _keras_module_of, keras_logits_model, load_model_file
from ipguard_tf.zoo.copies import accuracy_of

log = logging.getLogger(__name__)

EPOCHS = NEGATIVE_EPOCHS
LEARNING_RATE = 1e-3
BATCH = 128


def recipe(epochs: int = EPOCHS) -> Dict[str, Any]:
    """The stated training recipe of the negatives (recorded beside them and in the fingerprint)."""
    return {
        "optimizer": "adam",
        "learning_rate": LEARNING_RATE,
        "batch_size": BATCH,
        "epochs": int(epochs),
        "augmentation": "none",
        "init": "Keras clone of the target's architecture, fresh weights (seed i)",
    }


def fresh_clone(model: Any, seed: int) -> Any:
    """The target's architecture with fresh weights drawn with ``seed`` (Keras 2 or 3)."""
    K = _keras_module_of(model)
    K.utils.set_random_seed(seed)
    try:
        return K.models.clone_model(model)
    except Exception as exc:
        raise ParameterError(
            f"cannot clone {getattr(model, 'name', 'the model')} ({type(exc).__name__}): give --negatives a folder "
            "of independent models instead"
        ) from None


def _save(model: Any, path: Path) -> None:
    with atomic_path(path, suffix=path.suffix) as tmp:
        if path.suffix == ".h5":
            model.save(str(tmp), include_optimizer=False)
        else:
            model.save(str(tmp))


def train_negatives(
    model: Any,
    data: Any,
    count: int,
    folder: Path,
    *,
    epochs: int = EPOCHS,
    input_scale: float = 1.0,
    progress: Callable[[str], None] = log.info,
) -> List[Tuple[str, Any, float]]:
    """``count`` negatives (seeds 1..count) trained on ``data`` (a :class:`~ipguard_tf.io.data.Dataset` with labels),
    saved in ``folder``; returns (name, model, test accuracy) each. Negatives already in ``folder`` with the same
    recipe are loaded, not retrained."""
    if data is None or data.y_train is None:
        raise ParameterError("--negatives N trains negatives on labelled data: give --data with labels")
    if count < 1:
        raise ParameterError(f"--negatives must be at least 1, got {count}")
    folder.mkdir(parents=True, exist_ok=True)
    want = recipe(epochs) | {"input_scale": float(input_scale), "examples": int(len(data.x_train))}
    record_path = folder / "recipe.json"
    have = json.loads(record_path.read_text()) if record_path.exists() else None
    if have is not None and have != want:
        raise ParameterError(f"{folder} holds negatives trained with another recipe; remove it or choose --out anew")
    atomic_write_bytes(record_path, json.dumps(want, indent=1, sort_keys=True).encode())
    suffix = ".h5" if _is_tf_keras_model(model) else ".keras"
    K = _keras_module_of(model)
    softmax = keras_logits_model(model)[1] != "no softmax head"
    scale = np.float32(input_scale)
    out = []
    for seed in range(1, count + 1):
        path = folder / f"negative-{seed}{suffix}"
        if path.exists():
            neg = load_model_file(path)
            progress(f"negative {seed}/{count}: reused {path.name}")
        else:
            neg = fresh_clone(model, seed)
            neg.compile(
                optimizer=K.optimizers.Adam(LEARNING_RATE),
                loss=K.losses.SparseCategoricalCrossentropy(from_logits=not softmax),
            )
            with contextlib.redirect_stdout(sys.stderr):
                neg.fit(data.x_train * scale, data.y_train, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0)
            _save(neg, path)
        acc = accuracy_of(neg, data.x_test, data.y_test, input_scale) if data.y_test is not None else float("nan")
        progress(f"negative {seed}/{count}: test accuracy {acc:.3f}")
        out.append((path.name, neg, float(acc)))
    return out


def target_accuracy(model: Any, data: Optional[Any], input_scale: float = 1.0) -> Optional[float]:
    """The target's accuracy on the held-out split of labelled owner data (None without labels)."""
    if data is None or data.y_test is None:
        return None
    return accuracy_of(model, data.x_test, data.y_test, input_scale)
