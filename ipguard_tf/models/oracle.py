"""The victim of a model-extraction attack as the thief sees it: a prediction API that answers labels or
probabilities for the points sent to it, and counts them (issue 14).

An :class:`Oracle` wraps the same two things verification queries: a local model (anything
:func:`~ipguard_tf.models.classifier.as_classifier` accepts, TFLite files included) or a model behind an HTTP prediction
API (:class:`~ipguard_tf.models.remote.RemoteSuspect`). ``output`` says what the API exposes: ``"labels"`` (arg-max
only; asking for probabilities is a one-line :class:`OracleError`) or ``"probabilities"`` (both). Every point
answered counts once toward ``queries``; ``query_budget`` caps them, as a paid API would.

Probabilities of a local model are its softmax (of the logits, or the model's own probabilities where it
gives those). A remote service's score rows are used as they come when they look like probabilities (entries
in [0, 1] summing to 1 within 1e-3), else taken as logits and passed through a softmax.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from ipguard_tf.core.errors import IPGuardError, ParameterError
from ipguard_tf.core.statistics import resolve_scores_kind, softmax
from ipguard_tf.models.classifier import as_classifier

log = logging.getLogger(__name__)

OUTPUTS = ("labels", "probabilities")
__all__ = ("OUTPUTS", "Oracle", "OracleError", "softmax")


class OracleError(IPGuardError):
    """The victim cannot answer what the attack asks (one-line message), or the query budget is spent."""


class Oracle:
    """A victim answering labels or probabilities, counting the points it answered.

    Args:
        victim: a local model (see :func:`~ipguard_tf.models.classifier.as_classifier`) or a
            :class:`~ipguard_tf.models.remote.RemoteSuspect`.
        output: what the victim's API exposes: ``labels`` or ``probabilities``.
        query_budget: at most this many points answered in all (``None``: no limit).
        batch_size: points per call to the victim.
    """

    def __init__(
        self, victim: Any, *, output: str = "labels", query_budget: Optional[int] = None, batch_size: int = 256
    ) -> None:
        if output not in OUTPUTS:
            raise ParameterError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if query_budget is not None and (isinstance(query_budget, bool) or int(query_budget) < 0):
            raise ParameterError(f"query_budget must be >= 0, got {query_budget!r}")
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ParameterError(f"batch_size must be >= 1, got {batch_size!r}")
        victim = as_classifier(victim)  # a local model, or a remote one with the same predict interface
        if output == "probabilities" and not victim.has_scores:
            raise OracleError(
                f"{getattr(victim, 'name', victim)} gives labels only; it cannot serve as a probability API"
            )
        self.victim = victim
        self.output = output
        self.query_budget = None if query_budget is None else int(query_budget)
        self.batch_size = int(batch_size)
        self.queries = 0
        self.name = getattr(victim, "name", None) or getattr(victim, "endpoint", "victim")

    def _charge(self, n: int) -> None:
        if self.query_budget is not None and self.queries + n > self.query_budget:
            raise OracleError(f"query budget of {self.query_budget} points exhausted ({self.queries} answered)")
        self.queries += n

    def _batches(self, x: np.ndarray):
        for s in range(0, len(x), self.batch_size):
            chunk = x[s : s + self.batch_size]
            self._charge(len(chunk))
            yield chunk

    def labels(self, x: np.ndarray) -> np.ndarray:
        """The victim's labels for ``x`` (points in [0, 1]), int64."""
        x = np.asarray(x, np.float32)
        outs = [self.victim.predict_labels(c, batch_size=self.batch_size) for c in self._batches(x)]
        return np.concatenate(outs).astype(np.int64) if outs else np.zeros((0,), np.int64)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """The victim's class probabilities for ``x`` (float32, rows sum to 1)."""
        if self.output != "probabilities":
            raise OracleError(f"{self.name} answers labels only (output='labels'); this attack needs probabilities")
        x = np.asarray(x, np.float32)
        outs = []
        for c in self._batches(x):
            s = self.victim.predict_scores(c, batch_size=self.batch_size)
            probs = resolve_scores_kind(s, self.victim.scores_kind) == "probabilities"
            outs.append(s if probs else softmax(s))
        return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, 0), np.float32)

    def __repr__(self) -> str:
        return f"Oracle({self.name!r}, output={self.output!r}, queries={self.queries})"
