"""The paper's baselines (Section 2.2 and 5.1.3): Random, FGSM, IGSM and CW-L2, behind the same interface.

All four take the -TR/-TL/-RR/-RL strategies of :class:`~ipguard_tf.methods.base.FingerprintMethod` and record,
per point, the source label i, the target label j (y*), iterations, success (``converged``) and the L2
distortion from the starting point.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

from ipguard_tf.io.progress import progress_bar
from ipguard_tf.methods.base import FingerprintMethod, SearchOutput
from ipguard_tf.methods.ipguard import _max_excluding, search_stats
from ipguard_tf.methods.search import AdamSearch, SearchProblem
from ipguard_tf.models.classifier import Classifier

log = logging.getLogger(__name__)


class RandomPoints(FingerprintMethod):
    """Random (Section 5.1.3): the initial points themselves, labelled by the target.

    With the default ``init="R"`` these are uniform points of [0, 1]^d, the paper's Random baseline; with
    ``init="T"`` they are random training examples. The target-label strategy only fills the ``target``
    record (nothing is searched); every point counts as converged.
    """

    name = "random"

    def _search(self, clf, plan, x0, src, tgt, *, checkpoint=None) -> SearchOutput:
        n = len(x0)
        return SearchOutput(
            x=x0, iterations=np.zeros(n, np.int64), objective=np.full(n, np.nan, np.float32), converged=np.ones(n, bool)
        )


def targeted_sign_gradient(logits_fn, x: tf.Tensor, tgt: tf.Tensor) -> tf.Tensor:
    """sign(grad_x J(C, y*; x)) with J the softmax cross-entropy on the logits (paper Eq. 1)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tgt, logits=logits_fn(x))
    return tf.sign(tape.gradient(loss, x))


def fgsm_step(logits_fn, x: tf.Tensor, tgt: tf.Tensor, step: float) -> tf.Tensor:
    """One targeted FGSM step, x' = clip_[0,1](x - step * sign(grad_x J(C, y*; x))) (paper Eq. 1)."""
    return tf.clip_by_value(x - step * targeted_sign_gradient(logits_fn, x, tgt), 0.0, 1.0)


class FGSM(FingerprintMethod):
    """Targeted FGSM (Goodfellow et al. 2015; paper Eq. 1): one signed-gradient step of size ``epsilon``.

    ``converged`` records whether the target labels the result y*. Hyperparameter (see
    :mod:`ipguard_tf.core.registry`): ``epsilon``, the step (default
    :data:`~ipguard_tf.core.constants.DEFAULT_EPSILON`).
    """

    name = "fgsm"
    epsilon: float

    def _prepare(self, clf: Classifier, params: Dict[str, Any]):
        eps = params["epsilon"]
        return tf.function(lambda x, t: fgsm_step(clf.logits, x, t, eps), reduce_retracing=True)

    def _search(self, clf, step, x0, src, tgt, *, checkpoint=None) -> SearchOutput:
        x = step(tf.constant(x0), tf.constant(tgt, tf.int32)).numpy()
        n = len(x0)
        return SearchOutput(
            x=x,
            iterations=np.ones(n, np.int64),
            objective=np.full(n, np.nan, np.float32),
            converged=clf.predict_labels(x) == tgt,
        )


class IGSM(FingerprintMethod):
    """Targeted IGSM / basic iterative method (Kurakin et al. 2017; paper Eq. 2), built on :func:`fgsm_step`.

    Each iteration takes an FGSM step of size ``alpha`` (paper: 1/255, the smallest step for 8-bit images), then
    projects onto the L-infinity ball of radius ``epsilon`` around the start and onto [0, 1]. A point stops as
    soon as the target labels it y* (checked before each step), or after ``max_iter`` iterations (paper: 1,000).
    All points run together in one ``tf.function``; a stopped point is no longer changed. Hyperparameters (see
    :mod:`ipguard_tf.core.registry`): ``epsilon``, ``alpha``, ``max_iter``.
    """

    name = "igsm"
    epsilon: float
    alpha: float
    max_iter: int

    def _prepare(self, clf: Classifier, params: Dict[str, Any]):
        eps, alpha, max_iter = params["epsilon"], params["alpha"], params["max_iter"]
        logits_fn = clf.logits

        def run(x0, tgt):
            n = tf.shape(x0)[0]
            lo = tf.maximum(x0 - eps, 0.0)
            hi = tf.minimum(x0 + eps, 1.0)

            def cond(i, x, done, iters):
                return tf.logical_and(i < max_iter, tf.logical_not(tf.reduce_all(done)))

            def body(i, x, done, iters):
                hit = tf.equal(tf.argmax(logits_fn(x), axis=1, output_type=tf.int32), tgt)
                done = tf.logical_or(done, hit)
                x_new = tf.clip_by_value(fgsm_step(logits_fn, x, tgt, alpha), lo, hi)
                keep = tf.reshape(done, [-1] + [1] * (len(x0.shape) - 1))
                x = tf.where(keep, x, x_new)
                return i + 1, x, done, iters + tf.cast(tf.logical_not(done), tf.int32)

            _, x, done, iters = tf.while_loop(cond, body, (0, x0, tf.zeros([n], tf.bool), tf.zeros([n], tf.int32)))
            return x, iters

        return tf.function(run, reduce_retracing=True)

    def _search(self, clf, run, x0, src, tgt, *, checkpoint=None) -> SearchOutput:
        x, iters = run(tf.constant(x0), tf.constant(tgt, tf.int32))
        x = x.numpy()
        return SearchOutput(
            x=x,
            iterations=iters.numpy().astype(np.int64),
            objective=np.full(len(x0), np.nan, np.float32),
            converged=clf.predict_labels(x) == tgt,
        )


# ------------------------------------------------------------------------------------------------------------------
def to_tanh_space(x: np.ndarray) -> np.ndarray:
    """w with (tanh(w) + 1) / 2 = x, shrunk by 0.999999 as in Carlini & Wagner's reference code."""
    return np.arctanh((2.0 * np.asarray(x, np.float64) - 1.0) * 0.999999).astype(np.float32)


def from_tanh_space(w):
    return (tf.tanh(w) + 1.0) / 2.0


def cw_margin(logits: tf.Tensor, tgt: tf.Tensor, kappa: float) -> tf.Tensor:
    """max(max_{t != y*} Z_t - Z_{y*} + kappa, 0): CW's f_6 on logits, targeted."""
    zt = tf.gather(logits, tgt, batch_dims=1)
    zo = _max_excluding(logits, tgt)
    return tf.nn.relu(zo - zt + kappa)


class CWProblem(SearchProblem):
    """CW-L2's objective in tanh space: ||x - x0||^2 + c * max(max_{t != y*} Z_t - Z_{y*} + kappa, 0).

    Success (the reference's ``compare``): Z_{y*} - kappa >= every other logit. The score kept per point is the
    squared L2 distance; the search does not stop at success (it keeps shrinking the distortion) but may abort
    early when the loss stalls.
    """

    stop_on_success = False

    def __init__(self, kappa: float) -> None:
        self.kappa = float(kappa)

    def to_input(self, w, ctx):
        return from_tanh_space(w)

    def loss(self, x, logits, ctx):
        n = tf.shape(x)[0]
        l2 = tf.reduce_sum(tf.square(tf.reshape(x - ctx["x0"], [n, -1])), axis=1)
        tgt = ctx["tgt"]
        margin = cw_margin(logits, tgt, self.kappa)
        zt = tf.gather(logits, tgt, batch_dims=1)
        succ = zt - self.kappa >= _max_excluding(logits, tgt)
        return l2 + ctx["const"] * margin, succ, l2


class CWL2(FingerprintMethod):
    """Targeted CW-L2 (Carlini & Wagner 2017), following their reference implementation (``l2_attack.py``).

    Per point, a binary search over the constant c (``binary_search_steps`` = 9, starting at
    ``initial_const`` = 1e-3; c x10 while no success has been seen, else bisection). Each search step restarts
    Adam from the initial point (the reference resets the modifier and the optimizer) and runs at most
    ``max_iter`` iterations (paper: 1,000; reference default 10,000), aborting when the loss has not decreased
    by 0.01 % over a tenth of ``max_iter`` (per point here; the reference checks the batch sum). The kept
    example is the successful one with the smallest L2 distortion over all steps; a point that never succeeds
    is returned at its initial point with ``converged=False``. The Adam loop is :class:`AdamSearch`, the same
    one IPGuard uses.

    Hyperparameters (see :mod:`ipguard_tf.core.registry`): ``kappa`` (the confidence margin, the paper's k for
    CW-L2), ``learning_rate`` (``None``: 0.001 for 28x28/32x32, 0.1 for ImageNet size, paper Section 5.1.3),
    ``max_iter``, ``binary_search_steps``, ``initial_const``, ``abort_early``, ``segment``, ``jit_compile``.
    """

    name = "cw"
    kappa: float
    learning_rate: Optional[float]
    max_iter: int
    binary_search_steps: int
    initial_const: float
    abort_early: bool
    segment: int
    jit_compile: bool

    def _prepare(self, clf: Classifier, params: Dict[str, Any]) -> AdamSearch:
        return AdamSearch.from_params(
            clf.logits, CWProblem(params["kappa"]), params, abort_early=params["abort_early"], progress=False
        )

    def _search(self, clf, searcher: AdamSearch, x0, src, tgt, *, checkpoint=None) -> SearchOutput:
        n = len(x0)
        w0 = to_tanh_space(x0)
        x0t = from_tanh_space(tf.constant(w0)).numpy()  # the reference measures distance from this
        lower = np.zeros(n)
        upper = np.full(n, 1e10)
        const = np.full(n, self.initial_const)
        best_l2 = np.full(n, np.inf)
        best_x = x0.copy()
        iters = np.zeros(n, np.int64)
        nonfinite = np.zeros(n, bool)
        stats: Dict[str, float] = {}
        segments: list = []
        with progress_bar(self.binary_search_steps, f"CW-L2-{self.strategy}", self.progress, "step") as bar:
            for _ in range(self.binary_search_steps):
                r = searcher.run(w0, {"src": src, "tgt": tgt, "x0": x0t, "const": const}, checkpoint=checkpoint)
                for k, v in search_stats(r).items():
                    stats[k] = stats.get(k, 0.0) + v
                segments += r.segments
                iters += r.iterations
                nonfinite |= r.nonfinite
                ok = r.success & np.isfinite(r.best_score)
                better = ok & (r.best_score < best_l2)
                best_l2[better] = r.best_score[better]
                best_x[better] = r.best_x[better]
                # binary search on c, per point (reference l2_attack.py)
                upper[ok] = np.minimum(upper[ok], const[ok])
                fail = ~ok
                lower[fail] = np.maximum(lower[fail], const[fail])
                bounded = upper < 1e9
                const = np.where(bounded, (lower + upper) / 2.0, np.where(fail, const * 10.0, const))
                bar.update(1)
        success = np.isfinite(best_l2)
        return SearchOutput(
            x=np.where(success.reshape((-1,) + (1,) * (x0.ndim - 1)), best_x, x0),
            iterations=iters,
            objective=np.where(success, best_l2, np.nan).astype(np.float32),
            converged=success,
            nonfinite=nonfinite & ~success,
            stats=stats,
            segments=segments,
        )
