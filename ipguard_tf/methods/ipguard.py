"""IPGuard's Extract (paper Section 4.2, Eq. 5)."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

from ipguard_tf.methods.base import FingerprintMethod, SearchOutput
from ipguard_tf.methods.search import AdamSearch, SearchProblem
from ipguard_tf.models.classifier import Classifier

log = logging.getLogger(__name__)

#: an audit counts Eq. 5 as 0 up to this much, relative to the point's largest absolute logit (float rounding)
GOAL_RTOL = 1e-5


def _max_excluding(logits: tf.Tensor, *exclude: tf.Tensor) -> tf.Tensor:
    c = tf.shape(logits)[1]
    mask = tf.zeros_like(logits, dtype=tf.bool)
    for e in exclude:
        mask = tf.logical_or(mask, tf.cast(tf.one_hot(e, c), tf.bool))
    very_low = tf.fill(tf.shape(logits), tf.constant(-1e30, logits.dtype))
    return tf.reduce_max(tf.where(mask, very_low, logits), axis=1)


def ipguard_objective(logits: tf.Tensor, i: tf.Tensor, j: tf.Tensor, k: float) -> tf.Tensor:
    """Eq. 5 per point: ReLU(Z_i - Z_j + k) + ReLU(max_{t != i, j} Z_t - Z_i).

    It is 0 exactly when Z_j >= Z_i + k and Z_i >= every other logit: x lies on j's side of the boundary
    between i and j, at logit margin k, with i the runner-up. With two classes the second term is 0.
    """
    logits = tf.convert_to_tensor(logits)
    i = tf.cast(i, tf.int32)
    j = tf.cast(j, tf.int32)
    zi = tf.gather(logits, i, batch_dims=1)
    zj = tf.gather(logits, j, batch_dims=1)
    zo = _max_excluding(logits, i, j)
    return tf.nn.relu(zi - zj + k) + tf.nn.relu(zo - zi)


class IPGuardProblem(SearchProblem):
    """Eq. 5 on x itself; after each Adam step x is clipped to [0, 1] (the paper does not say how it keeps
    points in the data domain; projecting back, as FGSM/IGSM's clip does, is the simplest choice that never
    leaves it). A point stops when its objective is 0."""

    stop_on_success = True

    def __init__(self, k: float) -> None:
        self.k = float(k)

    def project(self, w, ctx):
        return tf.clip_by_value(w, 0.0, 1.0)

    def loss(self, x, logits, ctx):
        obj = ipguard_objective(logits, ctx["src"], ctx["tgt"], self.k)
        n = tf.shape(x)[0]
        score = tf.reduce_sum(tf.square(tf.reshape(x - ctx["x0"], [n, -1])), axis=1)
        return obj, obj <= 0.0, score


class IPGuard(FingerprintMethod):
    """IPGuard Extract: n points near the target's classification boundary (paper Section 4.2).

    For each point, with i the label the target predicts at the initial point and j the target label, Adam
    minimises Eq. 5 until it is 0 or ``max_iter`` iterations have run. All points of a batch are optimised
    together, each with its own Adam state and frozen as soon as its objective is 0, which gives the paper's
    one-point-at-a-time result (each point's trajectory does not depend on the others), only faster.

    Hyperparameters (declared in :mod:`ipguard_tf.core.registry`, checked by the constructor):
        k: logit margin of Eq. 5 (default :data:`~ipguard_tf.core.constants.DEFAULT_K`); trades robustness (large k)
            for uniqueness (small k). It must suit the target's logit scale (see README, "Choice of k").
        learning_rate: Adam step; ``None`` picks the paper's value from the input size (0.001 for 28x28/32x32,
            0.1 for ImageNet size).
        max_iter: iteration cap per point (paper: 1,000).
        segment: iterations per graph call between removing finished points from the batch.
        jit_compile: XLA-compile the search loop (faster for some models, slower for small ones).
        init, label, seed, batch_size (and the runtime options progress, distribute): see
            :class:`FingerprintMethod`.
    """

    name = "ipguard"
    k: float
    learning_rate: Optional[float]
    max_iter: int
    segment: int
    jit_compile: bool

    def _prepare(self, clf: Classifier, params: Dict[str, Any]) -> AdamSearch:
        return AdamSearch.from_params(
            clf.logits,
            IPGuardProblem(params["k"]),
            params,
            progress=self.progress,
            desc=f"IPGuard-{self.strategy} k={params['k']:g}",
        )

    def _search(self, clf, searcher: AdamSearch, x0, src, tgt, *, checkpoint=None) -> SearchOutput:
        r = searcher.run(x0, {"src": src, "tgt": tgt, "x0": x0}, checkpoint=checkpoint)
        return SearchOutput(
            x=r.x,
            iterations=r.iterations,
            objective=r.loss,
            converged=r.success,
            nonfinite=r.nonfinite,
            stats=search_stats(r),
            segments=r.segments,
        )

    # -- what an audit asks (ipguard_tf.verification.audit) ----------------------------------------------------
    def goal_failures(self, scores: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Per point: Eq. 5 at k is not 0 under ``scores`` (the target's logits), up to :data:`GOAL_RTOL` of the
        point's largest absolute logit (another machine's rounding)."""
        scores = np.asarray(scores, np.float32)
        obj = ipguard_objective(scores, source, target, self.k).numpy()
        return ~(obj <= GOAL_RTOL * (1.0 + np.abs(scores).max(axis=1)))

    def claim_failures(self, iterations: np.ndarray, converged: np.ndarray, nonfinite: np.ndarray) -> np.ndarray:
        """Per point: flagged unconverged (and not put back for non-finite values) before the whole budget ran: a
        search stops early only on success."""
        return ~np.asarray(converged, bool) & ~np.asarray(nonfinite, bool) & (np.asarray(iterations) != self.max_iter)

    def claimed_search(self, clf, x0, src, tgt, iterations, converged) -> np.ndarray:
        """The searches as a file says they went: stopping at the recorded iteration count and freezing on success
        for a point flagged converged; the whole budget without freezing for one that is not (points with the same
        claim share one run; each point's search is independent of the others)."""
        params = self.resolved_params(clf)
        out = np.empty_like(x0)
        iterations = np.asarray(iterations)
        converged = np.asarray(converged, bool)
        for t, c in sorted({(int(t), bool(c)) for t, c in zip(iterations, converged)}):
            sel = np.flatnonzero((iterations == t) & (converged == c))
            problem = IPGuardProblem(params["k"])
            problem.stop_on_success = c
            searcher = AdamSearch.from_params(clf.logits, problem, dict(params, max_iter=t))
            r = searcher.run(x0[sel], {"src": src[sel], "tgt": tgt[sel], "x0": x0[sel]})
            x = r.x.astype(np.float32)
            bad = ~np.isfinite(x.reshape(len(sel), -1)).all(axis=1)
            x[bad] = x0[sel][bad]
            out[sel] = np.clip(x, 0.0, 1.0)
        return out


def search_stats(r) -> Dict[str, float]:
    """The counters of one :class:`~ipguard_tf.methods.search.SearchResult` that add up over batches and shards."""
    return {k: r.stats[k] for k in ("sample_steps", "wasted_sample_steps", "loop_seconds")}
