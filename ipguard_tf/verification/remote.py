"""Verify a suspect that is only reachable through a prediction API (paper Sections 3.1-3.2: the verifier
queries the suspect's deployed service with the fingerprint points and compares what it returns).

The client (protocols, checks of every reply, timeouts, retries, rate limit, query budget) is
:class:`~ipguard_tf.models.remote.RemoteSuspect`. Here: the answers received are saved after every batch to a
progress file (a :class:`~ipguard_tf.io.checkpoint.StateFile`, written atomically, tagged with the fingerprint
and the suspect's settings), so an interrupted verification (Ctrl-C, a crash, an exhausted budget, a persistent
server error) resumes without re-querying the points already answered; the file is removed once the
verification is complete. The statistic is computed by the fingerprint's own
:class:`~ipguard_tf.core.statistics.Statistic`, as for a local suspect.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ipguard_tf.core.fingerprint import Fingerprint
from ipguard_tf.core.statistics import Verification, statistic_of
from ipguard_tf.core.threshold import check_threshold
from ipguard_tf.io.checkpoint import StateFile
from ipguard_tf.io.progress import progress_bar
from ipguard_tf.models.remote import RemoteError, RemoteSuspect

log = logging.getLogger(__name__)


PROGRESS_SCHEMA = "ipguard_tf.remote-progress/2"


# -------------------------------------------------------------------------------------------------------------
def default_progress_path(fingerprint_path: str, url: str) -> Path:
    """Where the answered labels of an unfinished verification are kept: beside the fingerprint file,
    named after it and a hash of the suspect URL."""
    p = Path(fingerprint_path)
    return p.with_name(f"{p.name}.{hashlib.sha256(url.encode()).hexdigest()[:12]}.remote-progress.npz")


def _progress_file(path: Path, key: Dict[str, Any]) -> StateFile:
    """The progress file: one array, ``labels`` (int64, -1: not answered yet) or ``scores`` (float64 rows, NaN:
    not yet); its identity ``key`` (fingerprint, endpoint, protocol, output, input scale). Its errors are
    :class:`RemoteError`."""
    return StateFile(
        path,
        key,
        "progress file",
        schema=PROGRESS_SCHEMA,
        error=RemoteError,
        other="another verification (fingerprint, URL or settings differ)",
        hint="pass another --progress-file",
    )


def _load_progress(store: Optional[StateFile], n: int, classes: Optional[int] = None) -> np.ndarray:
    """The answers saved so far in ``store`` (none: no progress file): labels (-1: not answered yet) or, with
    ``classes``, score rows (NaN: not yet)."""
    answers = np.full(n, -1, np.int64) if classes is None else np.full((n, classes), np.nan, np.float64)
    saved = None if store is None else store.load()
    if saved is None:
        return answers
    name = "labels" if classes is None else "scores"
    a = saved[0].get(name)
    if a is None or a.shape != answers.shape or a.dtype.kind not in ("i" if classes is None else "f"):
        raise store.unreadable(f"no {name} for {n} points")
    if classes is None and (a < -1).any():
        raise store.unreadable("labels below -1")
    answers[:] = a
    done = int((answers >= 0).sum() if classes is None else np.isfinite(answers).all(axis=1).sum())
    log.info("resuming from %s: %d of %d points already answered", store.path, done, n)
    return answers


def verify_remote(
    fp: Fingerprint,
    suspect: RemoteSuspect,
    threshold: Optional[float] = None,
    *,
    progress_path: Optional[Path] = None,
    name: Optional[str] = None,
    progress: bool = False,
) -> Verification:
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
        raise RemoteError(
            f"{stat.display} reads a model's raw outputs (TAFA); verify a TAFA fingerprint against "
            "a model file, not a prediction API"
        )
    threshold = check_threshold(stat.default_threshold if threshold is None else threshold)
    n = len(fp)
    if n == 0:
        raise RemoteError("the fingerprint has no points")
    if suspect.num_classes is not None and int(fp.y.max()) >= suspect.num_classes:
        raise RemoteError("fingerprint labels exceed the number of classes")
    scores = stat.reads == "scores"
    if scores and suspect.output == "labels":
        raise RemoteError(
            f"{stat.display} needs the suspect's class scores; an endpoint queried for labels only "
            "cannot give them (use --output probabilities)"
        )
    key = {
        "fingerprint_sha256": fp.sha256,
        "endpoint": suspect.endpoint,
        "protocol": suspect.protocol,
        "output": suspect.output,
        "input_scale": suspect.input_scale,
    }
    classes = int(fp.metadata["num_classes"]) if scores else None
    store = None if progress_path is None else _progress_file(Path(progress_path), key)
    answers = _load_progress(store, n, classes)
    todo = np.flatnonzero(~np.isfinite(answers).all(axis=1) if scores else answers < 0)
    try:
        with progress_bar(
            total=n, initial=n - len(todo), desc=f"querying {suspect.model_name}", enabled=progress, unit="pt"
        ) as bar:
            for s in range(0, len(todo), suspect.batch_size):
                idx = todo[s : s + suspect.batch_size]
                answers[idx] = suspect.query_scores(fp.x[idx]) if scores else suspect.query(fp.x[idx])
                if store is not None:
                    store.save({"scores" if scores else "labels": answers}, {})
                bar.update(len(idx))
    finally:
        suspect.close()
    if store is not None:
        store.remove()
    log.info(
        "%s: %d requests, %d points sent, %d retries",
        suspect.endpoint,
        suspect.requests_sent,
        suspect.points_sent,
        suspect.retried,
    )
    return stat.verification(name or suspect.url, fp, lambda x: answers, threshold, suspect.scores_kind)
