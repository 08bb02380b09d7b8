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
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ipguard_tf.core.constants import NEGATIVE_EPOCHS
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.io.files import atomic_path, atomic_write_bytes
from ipguard_tf.models.classifier import _is_tf_keras_model, _keras_module_of, keras_logits_model, load_model_file
from ipguard_tf.zoo.copies import accuracy_of
from ipguard_tf.zoo.parallel import connect, import_ray, limit_threads, one_line

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


def train_negative(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    path: Path,
    *,
    epochs: int = EPOCHS,
    input_scale: float = 1.0,
) -> Any:
    """Negative ``seed``: a fresh clone of ``model`` trained with :func:`recipe` on (``x``, ``y``), saved
    atomically at ``path``; returned."""
    K = _keras_module_of(model)
    softmax = keras_logits_model(model)[1] != "no softmax head"
    neg = fresh_clone(model, seed)
    neg.compile(
        optimizer=K.optimizers.Adam(LEARNING_RATE),
        loss=K.losses.SparseCategoricalCrossentropy(from_logits=not softmax),
    )
    with contextlib.redirect_stdout(sys.stderr):
        neg.fit(x * np.float32(input_scale), y, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0)
    _save(neg, path)
    return neg


def _negative_task(model_file: str, data: list, seed: int, path: str, epochs: int, input_scale: float, cpus: float):
    """One Ray task: negative ``seed`` of the model in ``model_file``, written to ``path``; (seed, seconds)."""
    import ray as ray_module

    t0 = time.time()
    limit_threads(cpus)
    x, y = ray_module.get(data[0])
    train_negative(load_model_file(model_file), x, y, seed, Path(path), epochs=epochs, input_scale=input_scale)
    return seed, time.time() - t0


def _train_on_ray(
    model_file: Optional[str],
    data: Any,
    seeds: List[int],
    folder: Path,
    suffix: str,
    epochs: int,
    input_scale: float,
    options: Any,
    progress: Callable[[str], None],
) -> None:
    """Train negatives ``seeds`` as Ray tasks (one each, with the options' resources), each writing its file."""
    if not seeds:
        return
    if model_file is None:
        raise ParameterError("training negatives on Ray needs the model as a file (workers load it)")
    ray = import_ray()
    started = connect(ray, options)
    try:
        opts = dict(num_cpus=options.cpus_per_member, max_retries=options.max_retries)
        if options.gpus_per_member:
            opts["num_gpus"] = options.gpus_per_member
        remote = ray.remote(_negative_task).options(**opts)
        data_ref = [ray.put((data.x_train, data.y_train))]
        refs = [
            remote.remote(
                str(Path(model_file).resolve()),
                data_ref,
                s,
                str((folder / f"negative-{s}{suffix}").resolve()),
                epochs,
                input_scale,
                options.cpus_per_member,
            )
            for s in seeds
        ]
        errors = []
        for ref in refs:
            try:
                seed, seconds = ray.get(ref)
                progress(f"negative {seed}: trained on Ray in {seconds:.0f} s")
            except Exception as exc:
                errors.append(one_line(exc))
    finally:
        if started:
            ray.shutdown()
    if errors:
        raise ParameterError(f"training negatives on Ray: {len(errors)} failed: {errors[0]}")


def train_negatives(
    model: Any,
    data: Any,
    count: int,
    folder: Path,
    *,
    epochs: int = EPOCHS,
    input_scale: float = 1.0,
    progress: Callable[[str], None] = log.info,
    ray: Any = None,
    model_file: Optional[str] = None,
) -> List[Tuple[str, Any, float]]:
    """``count`` negatives (seeds 1..count) trained on ``data`` (a :class:`~ipguard_tf.io.data.Dataset` with labels),
    saved in ``folder``; returns (name, model, test accuracy) each. Negatives already in ``folder`` with the same
    recipe are loaded, not retrained. ``ray``: a :class:`~ipguard_tf.zoo.parallel.RayOptions` to train the missing
    ones as Ray tasks first, one per negative (issue 32; workers load ``model_file``, the target's file); the same
    recipe and seeds, so the same negatives up to the rounding of another number of threads."""
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
    if ray is not None:  # the missing ones trained on Ray first; the loop below finds their files
        todo = [s for s in range(1, count + 1) if not (folder / f"negative-{s}{suffix}").exists()]
        _train_on_ray(model_file, data, todo, folder, suffix, epochs, input_scale, ray, progress)
    out = []
    for seed in range(1, count + 1):
        path = folder / f"negative-{seed}{suffix}"
        if path.exists():
            neg = load_model_file(path)
            progress(f"negative {seed}/{count}: reused {path.name}")
        else:
            neg = train_negative(model, data.x_train, data.y_train, seed, path, epochs=epochs, input_scale=input_scale)
        acc = accuracy_of(neg, data.x_test, data.y_test, input_scale) if data.y_test is not None else float("nan")
        progress(f"negative {seed}/{count}: test accuracy {acc:.3f}")
        out.append((path.name, neg, float(acc)))
    return out


def target_accuracy(model: Any, data: Optional[Any], input_scale: float = 1.0) -> Optional[float]:
    """The target's accuracy on the held-out split of labelled owner data (None without labels)."""
    if data is None or data.y_test is None:
        return None
    return accuracy_of(model, data.x_test, data.y_test, input_scale)
