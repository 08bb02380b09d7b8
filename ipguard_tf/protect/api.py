"""The anti-piracy workflow behind ``ipguard protect`` and ``experiments/antipiracy.py``: train a protected model
into a folder (resumable), load a model with its key, evaluate it, attack it.

A protected run's folder holds ``model.keras`` (the model a thief could copy), ``key.npz`` (the transform, kept
apart; :mod:`~ipguard_tf.protect.keyfile`), ``train.json`` (settings, history, seconds, accuracies) and, while
training, ``checkpoint.npz``. A baseline (``transform="none"``) has no key.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ipguard_tf.core import constants as C
from ipguard_tf.core.errors import ModelError, ParameterError
from ipguard_tf.io.files import run_record, write_json
from ipguard_tf.models.classifier import content_sha256, load_model_file
from ipguard_tf.protect.keyfile import check_model, load_key, save_key
from ipguard_tf.protect.training import ProtectSettings, evaluate_protection, train_protected
from ipguard_tf.protect.transforms import KINDS, Transform, make_transform, new_key
from ipguard_tf.zoo.architectures import build_architecture
from ipguard_tf.zoo.store import save_member
from ipguard_tf.zoo.train import deterministic

log = logging.getLogger(__name__)

#: architectures the slides use (the simple CNN and ResNet-20; Chen & Wu's "Experimental Settings")
ARCHITECTURES = tuple(C.ANTIPIRACY_EPOCHS)
#: epochs per architecture: the project's Fashion-MNIST recipes (ipguard_tf.zoo.train.RECIPES)
EPOCHS = C.ANTIPIRACY_EPOCHS

MODEL_FILE, KEY_FILE, RECORD_FILE, CHECKPOINT_FILE = "model.keras", "key.npz", "train.json", "checkpoint.npz"


def protect(
    dataset,
    out: Union[str, Path],
    *,
    architecture: str = "simple_cnn",
    transform: str = "fixed",
    seed: int = 0,
    key: Optional[int] = None,
    settings: Optional[ProtectSettings] = None,
    transform_params: Optional[Dict[str, Any]] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Train ``architecture`` on ``dataset`` (a :class:`~ipguard_tf.io.data.Dataset`) with the anti-piracy loss and
    a new ``transform`` ("fixed", "learned", "generator"; "none" for the baseline), writing the folder ``out``.
    ``key`` (default: a fresh secret one) keys the transform; ``seed`` fixes the model's initialisation and the
    batch order. Resumes an unfinished run in ``out``; returns the ``train.json`` record (also when the run had
    already finished)."""

    out = Path(out)
    if transform not in KINDS + ("none",):
        raise ParameterError(f"unknown transform {transform!r}; choose one of {', '.join(KINDS + ('none',))}")
    if architecture not in EPOCHS and settings is None:
        raise ParameterError(f"no default epochs for {architecture}; pass settings")
    settings = settings or ProtectSettings(epochs=EPOCHS[architecture])
    record_path = out / RECORD_FILE
    if record_path.exists() and (out / MODEL_FILE).exists():
        import json

        rec = json.loads(record_path.read_text())
        if (rec.get("transform"), rec.get("architecture")) != (transform, architecture):
            raise ParameterError(
                f"{out} already holds a trained {rec.get('architecture')} {rec.get('transform')} "
                f"model; choose another --out for {architecture} {transform}"
            )
        log.info("%s already trained (%s); delete it to retrain", out, record_path)
        return rec
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT_FILE
    key_path = out / KEY_FILE
    if transform != "none":
        if key is None and ckpt.exists() and key_path.exists():
            key = load_key(key_path)[0].key  # resuming: the key the run started with
        key = new_key() if key is None else key
    deterministic(seed)
    model = build_architecture(architecture, dataset.input_shape, dataset.num_classes)
    t = None if transform == "none" else make_transform(transform, dataset.input_shape, key, **(transform_params or {}))
    if t is not None and not ckpt.exists():
        save_key(t, key_path, extra={"status": "training"})  # the key is on disk before any epoch is
    t0 = time.perf_counter()
    hist = train_protected(
        model,
        t,
        dataset.x_train,
        dataset.y_train,
        settings,
        seed=seed,
        checkpoint=ckpt,
        progress=progress,
        desc=f"{architecture} {transform}",
    )
    seconds = time.perf_counter() - t0
    metrics = evaluate_protection(model, t, dataset.x_test, dataset.y_test)
    rec = {
        "architecture": architecture,
        "transform": transform,
        "seed": seed,
        "dataset": dataset.name,
        "transform_params": None if t is None else t.params(),
        **hist,
        "metrics": metrics,
        "train_seconds_this_run": round(seconds, 1),
        "train_seconds_total": round(sum(h["seconds"] for h in hist["history"]), 1),
    }
    save_member(model, out / MODEL_FILE)
    if t is not None:
        save_key(
            t,
            key_path,
            model_sha256=content_sha256(model),
            extra={"architecture": architecture, "dataset": dataset.name, "settings": settings.as_dict()},
        )
        rec["key_file"] = KEY_FILE
    rec["model_sha256"] = content_sha256(model)

    prov = run_record({})
    rec.update(command=prov["command"], machine=prov["machine"], versions=prov["versions"], finished=prov["finished"])
    write_json(record_path, rec)
    ckpt.unlink(missing_ok=True)
    return rec


def load_protected(
    model_path: Union[str, Path], key_path: Optional[Union[str, Path]]
) -> Tuple[Any, Optional[Transform], Dict[str, Any]]:
    """The protected model (logits) and its transform (None without a key), the key checked against the model."""

    model = load_model_file(model_path)
    if key_path is None:
        return model, None, {}
    transform, meta = load_key(key_path)
    check_model(meta, model, key_path)
    return model, transform, meta


def evaluate(model, transform: Optional[Transform], dataset) -> Dict[str, Any]:
    """Authorised and unauthorised test accuracy and PSNR (:func:`evaluate_protection`) on ``dataset``'s test
    split, after checking the shapes agree."""
    if transform is not None and tuple(dataset.input_shape) != transform.input_shape:
        raise ModelError(
            f"the key's transform takes inputs of shape {transform.input_shape}, the dataset has "
            f"{tuple(dataset.input_shape)}"
        )
    return evaluate_protection(model, transform, np.asarray(dataset.x_test), dataset.y_test)
