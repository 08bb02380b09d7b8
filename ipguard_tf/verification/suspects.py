"""Verify (paper Section 4.1): query suspects on a fingerprint's points and give each its statistic and verdict.

:func:`verify` checks one suspect; :func:`verify_suspects` is everything ``ipguard verify`` does for a list of
them: the threshold (given, calibrated, or the statistic's default, and which of the three it was), zoo folders
expanded into their members with roles (absent members rebuilt, or skipped with a notice), remote suspects,
p-values under the fingerprint's calibration and, over a zoo's positives and negatives, robustness, uniqueness,
ARUC, AUC and gap. What is asked of a suspect and how its answers become a number is the fingerprint's own
:class:`~ipguard_tf.core.statistics.Statistic`; nothing here branches on which statistic it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from ipguard_tf.core import metrics
from ipguard_tf.core.calibration import Calibration, calibration_of
from ipguard_tf.core.checks import check_number
from ipguard_tf.core.errors import ModelError, ParameterError
from ipguard_tf.core.fingerprint import Fingerprint
from ipguard_tf.core.statistics import Answer, Statistic, Verification, statistic_of
from ipguard_tf.core.threshold import check_threshold
from ipguard_tf.models.classifier import as_classifier, load_model_file
from ipguard_tf.models.imagenet import as_imagenet_classifier, parse_model_spec
from ipguard_tf.models.outputs import checked_outputs
from ipguard_tf.models.remote import RemoteSuspect
from ipguard_tf.models.sharding import run_sharded
from ipguard_tf.verification.remote import verify_remote
from ipguard_tf.zoo.members import load_member, zoo_members
from ipguard_tf.zoo.store import is_zoo

log = logging.getLogger(__name__)

#: batch of a suspect's raw outputs (TAFA) when none is given
OUTPUTS_BATCH = 512


def suspect_answer(
    fingerprint: Fingerprint,
    stat: Statistic,
    suspect: Any,
    *,
    name: Optional[str] = None,
    batch_size: Optional[int] = None,
    distribute: Any = None,
    **adapter_kw: Any,
) -> Tuple[str, Answer, str]:
    """(name, answer, kind): the suspect as the statistic reads it (:attr:`Statistic.reads`): its labels, its
    class scores (``kind``: ``logits`` or ``probabilities``) or its raw outputs, as a batch function (points
    split over the replicas of a ``tf.distribute`` strategy). A suspect that cannot give what the statistic
    needs, or labels another number of classes than a matching rate compares, is a :class:`ModelError`."""
    if stat.reads == "outputs":  # any task: the raw model, not the classifier adapter
        f = checked_outputs(
            suspect, fingerprint.x[:1], fingerprint.metadata.get("output_size"), batch_size or OUTPUTS_BATCH
        )
        return name or getattr(suspect, "name", None) or str(suspect), f, "outputs"
    clf = as_classifier(suspect, **adapter_kw)
    who = name or getattr(clf, "name", None) or getattr(clf, "url", "suspect")
    classes = fingerprint.metadata.get("num_classes")
    if stat.same_label_set and classes and clf.num_classes and int(clf.num_classes) != int(classes):
        raise ModelError(
            f"suspect {who} has {clf.num_classes} classes; the fingerprinted model has "
            f"{classes}, so it cannot be a copy of it (nor be compared point by point)"
        )
    if stat.reads == "scores" and not clf.has_scores:
        raise ModelError(f"suspect {who} gives labels only; {stat.display} needs its class scores")
    predict = clf.predict_scores if stat.reads == "scores" else clf.predict_labels

    def answer(x: np.ndarray) -> np.ndarray:
        return np.concatenate(run_sharded(distribute, len(x), lambda idx: predict(x[idx], batch_size)))

    return who, answer, clf.scores_kind if stat.reads == "scores" else "labels"


def verify(
    fingerprint: Fingerprint,
    suspect: Any,
    threshold: Optional[float] = None,
    *,
    name: Optional[str] = None,
    batch_size: Optional[int] = None,
    distribute: Any = None,
    **adapter_kw: Any,
) -> Verification:
    """Query ``suspect`` (anything :func:`~ipguard_tf.models.classifier.as_classifier` accepts; for TAFA's
    statistics anything :func:`~ipguard_tf.models.outputs.raw_outputs` reads) on the fingerprint points and
    return its statistic and verdict (:func:`suspect_answer` says what is asked). ``threshold`` defaults to the
    statistic's. With a ``tf.distribute`` strategy the points are split across its replica devices."""
    stat = statistic_of(fingerprint)
    threshold = check_threshold(stat.default_threshold if threshold is None else threshold)
    who, answer, kind = suspect_answer(
        fingerprint, stat, suspect, name=name, batch_size=batch_size, distribute=distribute, **adapter_kw
    )
    return stat.verification(who, fingerprint, answer, threshold, kind)


def resolve_model(
    spec: Any,
    *,
    weights: Optional[str] = "imagenet",
    input_scale: float = 1.0,
    unsafe: bool = False,
    raw: bool = False,
    layout: str = "auto",
) -> Any:
    """A suspect as a person names it: ``imagenet:NAME`` (Keras Applications with ``weights``: ``imagenet``, a
    folder of weight files, or ``none``), a model file or SavedModel folder (read with ``input_scale``;
    ``unsafe`` allows files whose loading runs code; ``raw``: the model itself, for a statistic on raw outputs,
    not the classifier adapter; ``layout``: the input layout of an ``.onnx`` file, ``auto``, ``NHWC`` or
    ``NCHW``), or a model object as it is."""
    if not isinstance(spec, (str, Path)):
        return spec
    if raw:
        return load_model_file(spec, unsafe=unsafe, layout=layout)
    name = parse_model_spec(str(spec))
    if name is not None:
        return as_imagenet_classifier(name, None if weights is None or str(weights).lower() == "none" else weights)
    return as_classifier(spec, input_scale=input_scale, unsafe=unsafe, layout=layout)


def choose_threshold(
    fingerprint: Fingerprint, threshold: Optional[float] = None
) -> Tuple[float, str, Optional[Calibration]]:
    """(threshold, where it came from, the fingerprint's calibration): the one given, else the calibrated one,
    else the statistic's documented default."""
    cal = calibration_of(fingerprint)
    if threshold is not None:
        return check_threshold(threshold), "given (--threshold)", cal
    if cal is not None:
        if cal.threshold > 1:
            raise ParameterError(
                f"the calibration gives no threshold on these {cal.n} points at FPR {cal.fpr}; give --threshold"
            )
        return cal.threshold, f"calibrated at false-positive rate {cal.fpr:g}", cal
    return statistic_of(fingerprint).default_threshold, "the documented default (no calibration)", cal


@dataclass
class SuspectsReport:
    """What :func:`verify_suspects` found: one :class:`Verification` per suspect (p-values attached when the
    fingerprint is calibrated), each suspect's zoo role (None outside a zoo), the threshold and its source, and
    over a zoo's positives and negatives the :func:`~ipguard_tf.core.metrics.summary` (None without both)."""

    fingerprint: Fingerprint
    statistic: Statistic
    results: List[Verification]
    roles: List[Optional[str]]
    threshold: float
    threshold_source: str
    calibration: Optional[Calibration] = None
    summary: Optional[Dict[str, Any]] = None
    #: one line per suspect left out, saying why
    skipped: List[str] = field(default_factory=list)


def verify_suspects(
    fingerprint: Fingerprint,
    suspects: Iterable[Any],
    *,
    threshold: Optional[float] = None,
    batch_size: Optional[int] = None,
    input_scale: Optional[float] = None,
    weights: Optional[str] = "imagenet",
    unsafe: bool = False,
    data_dir: Optional[str] = None,
    rebuild: bool = True,
    progress_path: Optional[Callable[[RemoteSuspect], Optional[Path]]] = None,
    progress: bool = False,
    notice: Callable[[str], None] = log.warning,
    layout: str = "auto",
) -> SuspectsReport:
    """Verify every suspect against ``fingerprint``; see the module docstring.

    ``suspects``: model files or folders, ``imagenet:NAME``, model objects, zoo folders (every suspect member,
    with its role) and :class:`~ipguard_tf.models.remote.RemoteSuspect` (answers saved to ``progress_path(s)``
    while it runs). ``input_scale`` defaults to the fingerprint's; ``rebuild`` False skips zoo members whose
    file is absent instead of rebuilding them; ``notice`` hears one line per absent or skipped group; ``layout``
    is the input layout of ``.onnx`` suspect files (``auto``, ``NHWC`` or ``NCHW``)."""
    stat = statistic_of(fingerprint)
    threshold, source, cal = choose_threshold(fingerprint, threshold)
    given = fingerprint.metadata.get("input_scale") if input_scale is None else input_scale
    scale = check_number(1.0 if given is None else given, "input_scale", 0.0, low_open=True)
    results: List[Verification] = []
    roles: List[Optional[str]] = []
    skipped: List[str] = []
    for s in suspects:
        if isinstance(s, RemoteSuspect):
            results.append(
                verify_remote(
                    fingerprint,
                    s,
                    threshold,
                    name=s.url,
                    progress=progress,
                    progress_path=progress_path(s) if progress_path else None,
                )
            )
            roles.append(None)
        elif isinstance(s, (str, Path)) and is_zoo(s):
            for name, rec in zoo_members(s, rebuild=rebuild, notice=notice):
                if rec.get("labels") and stat.same_label_set:
                    # another label set (transfer): a matching rate cannot compare it; SAC's distance can
                    skipped.append(f"{name} skipped: it labels {rec['labels']}, not the fingerprint's classes")
                    log.warning(skipped[-1])
                    continue
                model = load_member(s, rec["name"], data_dir=data_dir)
                results.append(
                    verify(fingerprint, model, threshold, name=name, input_scale=scale, batch_size=batch_size)
                )
                roles.append(rec["role"])
                del model
        else:
            model = resolve_model(
                s, weights=weights, input_scale=scale, unsafe=unsafe, raw=stat.reads == "outputs", layout=layout
            )
            results.append(
                verify(
                    fingerprint,
                    model,
                    threshold,
                    name=str(s) if isinstance(s, (str, Path)) else None,
                    batch_size=batch_size,
                )
            )
            roles.append(None)
            del model
    if cal is not None:
        results = [replace(r, p_value=cal.p_value(r.matches, r.n)) if r.matches is not None else r for r in results]
    return SuspectsReport(
        fingerprint, stat, results, roles, threshold, source, cal, zoo_summary(results, roles, stat), skipped
    )


def zoo_summary(results: List[Verification], roles: List[Optional[str]], stat: Statistic) -> Optional[Dict[str, Any]]:
    """Robustness and uniqueness at the threshold, ARUC, AUC and gap over the zoo's positives and negatives (None
    without both)."""
    pos, neg = metrics.by_role([(r.value, role) for r, role in zip(results, roles)])
    if not pos or not neg:
        return None
    return metrics.summary(pos, neg, results[0].threshold, higher_is_copy=stat.higher_is_copy)
