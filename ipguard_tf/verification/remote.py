"""Verify a suspect that is only reachable through a prediction API (paper Sections 3.1-3.2: the verifier
queries the suspect's deployed service with the fingerprint points and compares what it returns).

The client (protocols, checks of every reply, timeouts, retries, rate limit, query budget) is
:class:`~ipguard_tf.models.remote.RemoteSuspect`. Here: the answers received are saved after every batch to a
progress file (atomically), so an interrupted verification (Ctrl-C, a crash, an exhausted budget, a persistent
server error) resumes without re-querying the points already answered; the file is removed once the
verification is complete. The statistic is computed by the fingerprint's own
:class:`~ipguard_tf.core.statistics.Statistic`, as for a local suspect.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ipguard_tf.core.fingerprint import Fingerprint
from ipguard_tf.io.files import atomic_write_bytes
from ipguard_tf.io.progress import progress_bar
from ipguard_tf.models.remote import RemoteError, RemoteSuspect, _is_int_like
from ipguard_tf.core.statistics import Verification, looks_like_probabilities, statistic_of
from ipguard_tf.core.threshold import check_threshold

log = logging.getLogger(__name__)


PROGRESS_SCHEMA = "ipguard_tf.remote-progress/1"


# -------------------------------------------------------------------------------------------------------------
def default_progress_path(fingerprint_path: str, url: str) -> Path:
    """Where the answered labels of an unfinished verification are kept: beside the fingerprint file,
    named after it and a hash of the suspect URL."""
    p = Path(fingerprint_path)
    return p.with_name(f"{p.name}.{hashlib.sha256(url.encode()).hexdigest()[:12]}.remote-progress.json")


def _load_progress(path: Optional[Path], key: Dict[str, Any], n: int, classes: Optional[int] = None) -> np.ndarray:
    """The answers saved so far in ``path`` (none: no progress file): labels (-1: not answered yet) or, with
    ``classes``, score rows (NaN: not yet)."""
    answers = np.full(n, -1, np.int64) if classes is None else np.full((n, classes), np.nan, np.float64)
    if path is None or not path.exists():
        return answers
    try:
        state = json.loads(path.read_text())
        if state.get("schema") != PROGRESS_SCHEMA:
            raise ValueError("schema")
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        raise RemoteError(f"progress file {path} is unreadable; delete it to start the verification afresh") from None
    if state.get("key") != key:
        raise RemoteError(f"progress file {path} belongs to another verification (fingerprint, URL or settings "
                          "differ); delete it or pass another --progress-file")
    if classes is None:
        saved = state.get("labels")
        ok = isinstance(saved, list) and len(saved) == n and all(_is_int_like(v) and v >= -1 for v in saved)
    else:
        saved = state.get("scores")
        ok = (isinstance(saved, list) and len(saved) == n and all(
            r is None or (isinstance(r, list) and len(r) == classes and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)) for r in saved))
    if not ok:
        raise RemoteError(f"progress file {path} is corrupt; delete it to start the verification afresh")
    if classes is None:
        answers[:] = np.asarray(saved, np.int64)
        done = int((answers >= 0).sum())
    else:
        for i, r in enumerate(saved):
            if r is not None:
                answers[i] = r
        done = int(np.isfinite(answers).all(axis=1).sum())
    log.info("resuming from %s: %d of %d points already answered", path, done, n)
    return answers


def verify_remote(fp: Fingerprint, suspect: RemoteSuspect, threshold: Optional[float] = None, *,
                  progress_path: Optional[Path] = None, name: Optional[str] = None, progress: bool = False) -> Verification:
    """Verify a remote suspect (paper Section 4.1 over a prediction API): query the fingerprint points not yet
    answered, in batches, saving the answers to ``progress_path`` after each batch, and return the
    :class:`~ipguard_tf.core.statistics.Verification`. The progress file is removed when all points are answered.

    A fingerprint verified by SAC's distance needs the service's class scores: a suspect declared
    ``output="labels"``, or a service that answers labels, is refused with a one-line :class:`RemoteError`
    saying why. The scores are used as the service gives them: rows that look like probabilities are compared
    with the target's probabilities, others as logits with its logits
    (:func:`~ipguard_tf.core.statistics.comparable_outputs`).
    """
    stat = statistic_of(fp)
    if stat.reads == "outputs":
        raise RemoteError(f"{stat.display} reads a model's raw outputs (TAFA); verify a TAFA fingerprint against "
                          "a model file, not a prediction API")
    threshold = check_threshold(stat.default_threshold if threshold is None else threshold)
    n = len(fp)
    if n == 0:
        raise RemoteError("the fingerprint has no points")
    if suspect.num_classes is not None and int(fp.y.max()) >= suspect.num_classes:
        raise RemoteError("fingerprint labels exceed the number of classes")
    scores = stat.reads == "scores"
    if scores and suspect.output == "labels":
        raise RemoteError(f"{stat.display} needs the suspect's class scores; an endpoint queried for labels only "
                          "cannot give them (use --output probabilities)")
    key = {"fingerprint_sha256": fp.sha256, "endpoint": suspect.endpoint,
           "protocol": suspect.protocol, "output": suspect.output, "input_scale": suspect.input_scale}
    classes = int(fp.metadata["num_classes"]) if scores else None
    answers = _load_progress(progress_path, key, n, classes)
    todo = np.flatnonzero(~np.isfinite(answers).all(axis=1) if scores else answers < 0)
    try:
        with progress_bar(total=n, initial=n - len(todo), desc=f"querying {suspect.model_name}",
                          enabled=progress, unit="pt") as bar:
            for s in range(0, len(todo), suspect.batch_size):
                idx = todo[s:s + suspect.batch_size]
                answers[idx] = suspect.query_scores(fp.x[idx]) if scores else suspect.query(fp.x[idx])
                if progress_path is not None:
                    saved = ({"labels": answers.tolist()} if not scores else
                             {"scores": [r.tolist() if np.isfinite(r).all() else None for r in answers]})
                    atomic_write_bytes(progress_path, json.dumps(
                        {"schema": PROGRESS_SCHEMA, "key": key, **saved}).encode())
                bar.update(len(idx))
    finally:
        suspect.close()
    if progress_path is not None:
        progress_path.unlink(missing_ok=True)
    log.info("%s: %d requests, %d points sent, %d retries", suspect.endpoint, suspect.requests_sent,
             suspect.points_sent, suspect.retried)
    kind = ("probabilities" if looks_like_probabilities(answers) else "logits") if scores else "labels"
    return stat.verification(name or suspect.url, fp, lambda x: answers, threshold, kind)
