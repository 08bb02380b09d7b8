"""Calibrate a fingerprint (issue 16): query independent models (negatives) on its points and fit the null
of :mod:`ipguard_tf.core.calibration` (the beta-binomial, why it and not another, and how it is stored are said
there).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple

import numpy as np

from ipguard_tf.core.calibration import MIN_NEGATIVES, Calibration, check_fpr
from ipguard_tf.core.constants import CALIBRATION_FPR
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.core.statistics import statistic_of
from ipguard_tf.io.env_info import utc_now
from ipguard_tf.io.progress import progress_bar
from ipguard_tf.models.classifier import as_classifier
from ipguard_tf.verification.suspects import resolve_model
from ipguard_tf.zoo.members import load_member, zoo_members
from ipguard_tf.zoo.store import is_zoo

log = logging.getLogger(__name__)


def calibrate(
    fingerprint: Any,
    negatives: Iterable[Tuple[str, Any]],
    *,
    fpr: float = CALIBRATION_FPR,
    source: str = "",
    batch_size: Optional[int] = None,
    progress: bool = True,
) -> Calibration:
    """Query each ``(name, model)`` of ``negatives`` (anything :func:`~ipguard_tf.models.classifier.as_classifier`
    accepts; models trained independently of the target) on the fingerprint's points and fit the null.

    Only matching-rate fingerprints are calibrated (:class:`ParameterError` otherwise)."""

    stat = statistic_of(fingerprint)
    if stat.name != "matching_rate":
        raise ParameterError(f"calibrate handles matching-rate fingerprints; this one is verified by {stat.display}")
    fpr = check_fpr(fpr)
    items = list(negatives)
    if len(items) < MIN_NEGATIVES:
        raise ParameterError(f"calibration needs at least {MIN_NEGATIVES} negatives, got {len(items)}")
    if len(items) < 10:
        log.warning("calibrating on %d negatives only: the null's spread is a rough estimate", len(items))
    names, rows = [], []
    classes = fingerprint.metadata.get("num_classes")
    with progress_bar(len(items), desc="calibrate", enabled=progress, unit="model") as bar:
        for name, model in items:
            clf = as_classifier(model)
            if classes and clf.num_classes and int(clf.num_classes) != int(classes):
                raise ParameterError(f"negative {name} has {clf.num_classes} classes, the fingerprint {classes}")
            labels = np.asarray(clf.predict_labels(fingerprint.x, batch_size)).reshape(-1)
            rows.append(labels == fingerprint.y.reshape(-1))
            names.append(name)
            bar.update(1)
    return Calibration(tuple(names), np.stack(rows), fpr, source, utc_now())


#: what a folder of negatives may hold besides SavedModel folders
MODEL_SUFFIXES = (".keras", ".h5", ".tflite", ".onnx", ".skops")


def negative_models(
    folder: str,
    *,
    data_dir: Optional[str] = None,
    rebuild: bool = True,
    unsafe: bool = False,
    notice: Callable[[str], None] = log.warning,
    input_scale: float = 1.0,
) -> Iterator[Tuple[str, Any]]:
    """(name, model) of each negative in ``folder``: a zoo's role-negative members (rebuilt when absent, with a
    notice, unless ``rebuild`` is False), or each model file / SavedModel folder in a plain folder (loaded
    lazily, inputs times ``input_scale``)."""
    root = Path(folder)
    if is_zoo(folder):
        for name, rec in zoo_members(folder, ("negative",), rebuild=rebuild, notice=notice, what="negatives"):
            yield name, load_member(folder, rec["name"], data_dir=data_dir)
        return
    if not root.is_dir():
        raise ParameterError(f"--negatives {folder}: not a folder")
    found = sorted(p for p in root.iterdir() if p.suffix in MODEL_SUFFIXES or (p / "saved_model.pb").exists())
    if not found:
        raise ParameterError(
            f"--negatives {folder}: neither a zoo nor a folder with model files "
            f"({', '.join(MODEL_SUFFIXES)} or SavedModel folders)"
        )
    for p in found:
        yield str(p), resolve_model(str(p), weights="none", unsafe=unsafe, input_scale=input_scale)
