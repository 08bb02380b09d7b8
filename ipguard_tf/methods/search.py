"""The batched GradientTape + Adam loop shared by IPGuard and CW-L2.

A *search problem* supplies the varying parts: how the optimisation variable ``w`` maps to an input ``x``
(identity for IPGuard, ``(tanh(w) + 1) / 2`` for CW-L2), how ``w`` is projected after a step (clip to
[0, 1] for IPGuard), and the per-point loss, success flag and score (lower is better; used to keep the best
successful point, as CW-L2 does). :class:`AdamSearch` runs Adam on all points of a batch at once:

* every point has its own Adam state (m, v, step count), exactly as if it were optimised alone;
* a point whose problem says ``stop_on_success`` is frozen the moment its success is observed (IPGuard: the
  objective is 0 at the current x), so its final x is the point at which success was checked;
* with ``abort_early`` a point stops when its loss has not decreased by 0.01 % over the last
  ``max_iter // 10`` iterations (Carlini & Wagner's reference rule, applied per point here);
* a point whose loss or gradient becomes NaN or infinite is stopped at once, left at its last finite
  position and flagged (``SearchResult.nonfinite``), so that one bad point neither poisons the others nor
  goes unreported;
* with a :class:`~ipguard_tf.io.checkpoint.SearchCheckpoint` given to :meth:`AdamSearch.run`, the whole state is
  saved between segments and a run with the same inputs resumes from it (see :mod:`ipguard_tf.io.checkpoint`);
* the inner loop runs ``segment`` iterations inside one ``tf.function``, unrolled (see ``segment`` below for
  why not a ``tf.while_loop``), with no retracing (the batch dimension is ``None`` in its signature); between
  segments, finished points are dropped from the batch so that they stop costing compute.

Nothing here pins a device: on a GPU the same graph runs there.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Tuple

import numpy as np
import tensorflow as tf

from ipguard_tf.core.constants import ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.io.checkpoint import content_key
from ipguard_tf.io.progress import progress_bar

log = logging.getLogger(__name__)


_BUILD_LOCK = threading.Lock()


def _current_device() -> str:
    """The device an op created here would run on (the enclosing ``tf.device`` scope, if any)."""
    return tf.identity(tf.constant(0.0)).device


class SearchProblem:
    """Interface of what varies between gradient searches (see the module docstring)."""

    #: freeze a point as soon as its success flag is True
    stop_on_success: bool = True

    def to_input(self, w: tf.Tensor, ctx: Dict[str, tf.Tensor]) -> tf.Tensor:
        return w

    def project(self, w: tf.Tensor, ctx: Dict[str, tf.Tensor]) -> tf.Tensor:
        return w

    def loss(
        self, x: tf.Tensor, logits: tf.Tensor, ctx: Dict[str, tf.Tensor]
    ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Return per-point (loss, success, score) for the batch."""
        raise NotImplementedError


@dataclass
class SearchResult:
    """Per-point outcome of :meth:`AdamSearch.run` (numpy arrays, in the input order)."""

    x: np.ndarray  #: input at the end (frozen point for stop_on_success problems)
    best_x: np.ndarray  #: best successful input by score (x where none succeeded)
    best_score: np.ndarray  #: its score (inf where none succeeded)
    success: np.ndarray  #: success observed at some iteration
    iterations: np.ndarray  #: Adam updates applied to the point
    loss: np.ndarray  #: loss at the last evaluation of the point
    nonfinite: np.ndarray  #: the loss or gradient became NaN/inf; the point was stopped there
    stats: Dict[str, float] = field(default_factory=dict)
    #: (active points, iterations) of every graph call, for comparing with a bare forward+backward pass
    segments: list = field(default_factory=list)


class AdamSearch:
    """Run Adam on a batch of points for a :class:`SearchProblem`, each point with its own state.

    Args:
        logits_fn: differentiable batch -> logits (``Classifier.logits``).
        problem: the varying parts.
        learning_rate: Adam step size (paper: 0.001 for 28x28/32x32 inputs, 0.1 for ImageNet).
        max_iter: maximum Adam updates per point (paper: 1,000).
        abort_early: stop a point when its loss stalls (CW-L2's rule).
        segment: iterations per graph call between compactions of the batch.
        jit_compile: compile the inner loop with XLA.
        progress: show a progress bar (``desc`` labels it).

    The searcher holds only these settings (and its compiled graphs): :meth:`run` keeps all state of a run in
    locals, so one searcher may serve several runs, one after another or at once (shard threads).
    """

    def __init__(
        self,
        logits_fn: Callable[[tf.Tensor], tf.Tensor],
        problem: SearchProblem,
        *,
        learning_rate: float,
        max_iter: int,
        abort_early: bool = False,
        segment: int = 10,
        beta1: float = ADAM_BETA1,
        beta2: float = ADAM_BETA2,
        epsilon: float = ADAM_EPSILON,
        jit_compile: bool = False,
        progress: bool = False,
        desc: str = "search",
    ) -> None:
        if learning_rate <= 0:
            raise ParameterError(f"learning_rate must be positive, got {learning_rate}")
        if max_iter < 0:
            raise ParameterError(f"max_iter must be >= 0, got {max_iter}")
        if segment < 1:
            raise ParameterError(f"segment must be >= 1, got {segment}")
        self.logits_fn = logits_fn
        self.problem = problem
        self.lr = float(learning_rate)
        self.max_iter = int(max_iter)
        self.abort_early = bool(abort_early)
        self.abort_every = max(1, self.max_iter // 10)
        self.segment = int(segment)
        self.b1, self.b2, self.eps = float(beta1), float(beta2), float(epsilon)
        self.progress = progress
        self.desc = desc
        self._own_cache: dict = {}
        self.jit_compile = jit_compile

    @classmethod
    def from_params(
        cls, logits_fn: Callable[[tf.Tensor], tf.Tensor], problem: SearchProblem, params: Dict[str, Any], **kw: Any
    ) -> "AdamSearch":
        """The search a method's resolved hyperparameters describe (``learning_rate``, ``max_iter``, ``segment``,
        ``jit_compile``); ``kw`` adds the rest (``abort_early``, ``progress``, ``desc``)."""
        return cls(
            logits_fn,
            problem,
            learning_rate=params["learning_rate"],
            max_iter=params["max_iter"],
            segment=params["segment"],
            jit_compile=params["jit_compile"],
            **kw,
        )

    # ------------------------------------------------------------------------------------------------------
    def _cache_key(self, w_shape, x_shape):
        return (
            _current_device(),
            type(self.problem).__name__,
            tuple(sorted(vars(self.problem).items())),
            tuple(w_shape),
            tuple(x_shape),
            self.lr,
            self.b1,
            self.b2,
            self.eps,
            self.abort_early,
            self.abort_every,
            self.jit_compile,
        )

    def _build(self, w_shape, x_shape, w_dtype) -> None:
        # Graphs are cached on the classifier (when logits_fn is a Classifier's bound method), so that repeated
        # generate() calls with the same settings do not trace again.
        owner = getattr(self.logits_fn, "__self__", None)
        cache = getattr(owner, "_graph_cache", None) if owner is not None else None
        if cache is None:
            cache = self._own_cache
        key = self._cache_key(w_shape, x_shape)
        with _BUILD_LOCK:
            if key not in cache:
                cache[key] = self._build_graphs(w_shape, x_shape, w_dtype)
        return cache[key]

    def _build_graphs(self, w_shape, x_shape, w_dtype) -> None:
        problem, logits_fn = self.problem, self.logits_fn
        lr, b1, b2, eps = self.lr, self.b1, self.b2, self.eps
        abort_early, abort_every = self.abort_early, self.abort_every
        stop_on_success = problem.stop_on_success
        bw = tf.TensorSpec([None] + list(w_shape), w_dtype)
        bx = tf.TensorSpec([None] + list(x_shape), tf.float32)
        vec = lambda dt: tf.TensorSpec([None], dt)  # noqa: E731
        ctx_spec = {"src": vec(tf.int32), "tgt": vec(tf.int32), "x0": bx, "const": vec(tf.float32)}
        state_spec = {
            "w": bw,
            "m": bw,
            "v": bw,
            "t": vec(tf.float32),
            "done": vec(tf.bool),
            "iters": vec(tf.int32),
            "best_x": bx,
            "best_score": vec(tf.float32),
            "success": vec(tf.bool),
            "prev": vec(tf.float32),
            "loss": vec(tf.float32),
            "nonfinite": vec(tf.bool),
        }

        def bcast(a, ref):
            return tf.reshape(a, [-1] + [1] * (len(ref.shape) - 1))

        def segment(state, ctx, it0, steps):
            # The steps are unrolled (a Python loop while tracing), not a tf.while_loop: on a 2-core CPU a
            # while-loop body ran at one of two speeds, fixed per traced graph and about 1.6x apart (10 vs 16 ms
            # a step for the Fashion-MNIST target at 100 points), while the unrolled graph always ran at the
            # fast one (experiments/results/bench). A segment therefore always runs its `steps` iterations; a
            # point that finishes inside it stops updating at once, and is dropped before the next segment.
            wasted = tf.constant(0, tf.int64)
            st = dict(state)
            for s in range(steps):
                st, wasted = body(s, wasted, st, ctx, it0)
            return st, wasted

        def body(s, wasted, st, ctx, it0):
            w = st["w"]
            ctx = dict(ctx, it=it0 + s)  # the iteration, for problems that draw per step (CAE's dropout)
            with tf.GradientTape() as tape:
                tape.watch(w)
                x = problem.to_input(w, ctx)
                logits = logits_fn(x)
                loss, succ, score = problem.loss(x, logits, ctx)
                total = tf.reduce_sum(loss)
            grad = tape.gradient(total, w)
            done = st["done"]
            wasted = wasted + tf.reduce_sum(tf.cast(done, tf.int64))
            live = tf.logical_not(done)
            finite = tf.logical_and(
                tf.math.is_finite(loss),
                tf.reduce_all(tf.math.is_finite(tf.reshape(grad, [tf.shape(grad)[0], -1])), axis=1),
            )
            bad = tf.logical_and(live, tf.logical_not(finite))
            nonfinite = tf.logical_or(st["nonfinite"], bad)
            done = tf.logical_or(done, bad)
            live = tf.logical_not(done)
            grad = tf.where(bcast(finite, grad), grad, tf.zeros_like(grad))
            succ = tf.logical_and(succ, live)
            better = tf.logical_and(succ, score < st["best_score"])
            best_x = tf.where(bcast(better, x), x, st["best_x"])
            best_score = tf.where(better, score, st["best_score"])
            success = tf.logical_or(st["success"], succ)
            loss_rec = tf.where(live, loss, st["loss"])
            if stop_on_success:
                done = tf.logical_or(done, succ)
            prev = st["prev"]
            if abort_early:
                it = it0 + s
                check = tf.equal(it % abort_every, 0)  # as the reference: from iteration 0 on
                stalled = tf.logical_and(check, loss > prev * 0.9999)
                done = tf.logical_or(done, tf.logical_and(live, stalled))
                prev = tf.where(tf.logical_and(check, live), loss, prev)
            upd = tf.logical_not(done)
            updf = tf.cast(upd, w.dtype)
            t = st["t"] + tf.cast(upd, tf.float32)
            m = tf.where(bcast(upd, w), b1 * st["m"] + (1 - b1) * grad, st["m"])
            v = tf.where(bcast(upd, w), b2 * st["v"] + (1 - b2) * tf.square(grad), st["v"])
            tt = tf.maximum(t, 1.0)
            mhat = m / bcast(1 - tf.pow(b1, tt), m)
            vhat = v / bcast(1 - tf.pow(b2, tt), v)
            step = lr * mhat / (tf.sqrt(vhat) + eps)
            w_new = problem.project(w - step * bcast(updf, w), ctx)
            w_new = tf.where(bcast(upd, w), w_new, w)
            iters = st["iters"] + tf.cast(upd, tf.int32)
            new = dict(
                st,
                w=w_new,
                m=m,
                v=v,
                t=t,
                done=done,
                iters=iters,
                best_x=best_x,
                best_score=best_score,
                success=success,
                prev=prev,
                loss=loss_rec,
                nonfinite=nonfinite,
            )
            return new, wasted

        graphs: Dict[int, Any] = {}  # one graph per segment length (the last segment may be shorter)

        def fn(state, ctx, it0, steps: int):
            with _BUILD_LOCK:
                if steps not in graphs:
                    graphs[steps] = tf.function(
                        lambda st, cx, i0: segment(st, cx, i0, steps),
                        input_signature=[state_spec, ctx_spec, tf.TensorSpec([], tf.int32)],
                        jit_compile=self.jit_compile,
                    )
                graph = graphs[steps]
            return graph(state, ctx, it0)

        def evaluate(w, ctx):
            x = problem.to_input(w, ctx)
            loss, succ, score = problem.loss(x, logits_fn(x), ctx)
            return x, loss, succ, score

        return fn, tf.function(evaluate, input_signature=[bw, ctx_spec])

    # ------------------------------------------------------------------------------------------------------
    def run(self, w0: np.ndarray, ctx: Dict[str, np.ndarray], checkpoint: Any = None) -> SearchResult:
        """Optimise all points of ``w0`` (shape [B, ...]) with per-point context arrays ``ctx``; save to and
        resume from ``checkpoint`` (a :class:`~ipguard_tf.io.checkpoint.SearchCheckpoint`) if given."""
        n = len(w0)
        w0 = np.asarray(w0, np.float32)
        ctx = {
            "src": np.asarray(ctx["src"], np.int32),
            "tgt": np.asarray(ctx["tgt"], np.int32),
            "x0": np.asarray(ctx["x0"], np.float32),
            "const": np.asarray(ctx.get("const", np.zeros(n)), np.float32),
        }
        seg_fn, eval_fn = self._build(w0.shape[1:], ctx["x0"].shape[1:], tf.float32)
        state = {
            "w": w0.copy(),
            "m": np.zeros_like(w0),
            "v": np.zeros_like(w0),
            "t": np.zeros(n, np.float32),
            "done": np.zeros(n, bool),
            "iters": np.zeros(n, np.int32),
            "best_x": ctx["x0"].copy(),
            "best_score": np.full(n, np.inf, np.float32),
            "success": np.zeros(n, bool),
            "prev": np.full(n, np.inf, np.float32),
            "loss": np.full(n, np.nan, np.float32),
            "nonfinite": np.zeros(n, bool),
        }
        computed = 0
        wasted = 0
        it = 0
        key = None
        if checkpoint is not None:
            key = content_key(
                w0,
                *(ctx[k] for k in sorted(ctx)),
                type(self.problem).__name__,
                sorted(vars(self.problem).items()),
                self.lr,
                self.max_iter,
                self.abort_early,
                self.segment,
                self.b1,
                self.b2,
                self.eps,
            )
            saved = checkpoint.get(key)
            if saved is not None:
                arrays, scalars = saved
                state.update(arrays)
                it, computed, wasted = int(scalars["it"]), int(scalars["computed"]), int(scalars["wasted"])
                log.info(
                    "%s: resumed at iteration %d of %d (%d points still running)",
                    self.desc,
                    it,
                    self.max_iter,
                    int((~state["done"]).sum()),
                )
        segments = []
        loop_start = time.perf_counter()
        with progress_bar(total=self.max_iter, desc=self.desc, enabled=self.progress, unit="it", initial=it) as bar:
            while it < self.max_iter and not state["done"].all():
                active = np.flatnonzero(~state["done"])
                steps = min(self.segment, self.max_iter - it)
                sub = {k: tf.constant(v[active]) for k, v in state.items()}
                subctx = {k: tf.constant(v[active]) for k, v in ctx.items()}
                out, wst = seg_fn(sub, subctx, tf.constant(it, tf.int32), steps)
                segments.append((len(active), steps))
                computed += steps * len(active)
                wasted += int(wst)
                for k, v in out.items():
                    state[k][active] = v.numpy()
                it += steps
                bar.update(steps)
                bar.set_postfix(active=int((~state["done"]).sum()))
                if key is not None:
                    checkpoint.put(key, state, {"it": it, "computed": computed, "wasted": wasted})
        loop_seconds = time.perf_counter() - loop_start
        if key is not None:
            checkpoint.put(key, state, {"it": it, "computed": computed, "wasted": wasted}, force=True)
        # final evaluation of every point at its stored w: the loss and success there
        x, loss, succ, score = eval_fn(tf.constant(state["w"]), {k: tf.constant(v) for k, v in ctx.items()})
        x, loss, succ, score = x.numpy(), loss.numpy(), succ.numpy(), score.numpy()
        state["loss"] = loss
        # points never frozen (still running at max_iter, or aborted) may succeed at their final x
        better = succ & (score < state["best_score"])
        state["best_x"][better] = x[better]
        state["best_score"][better] = score[better]
        # (frozen points keep the success they were frozen with)
        state["success"] |= (succ & ~state["done"]) if self.problem.stop_on_success else succ
        stats = {
            "iterations_run": float(it),
            "sample_steps": float(computed),
            "wasted_sample_steps": float(wasted),
            "loop_seconds": loop_seconds,
        }
        if state["nonfinite"].any():
            log.warning(
                "%s: %d point(s) stopped because their loss or gradient became NaN or infinite",
                self.desc,
                int(state["nonfinite"].sum()),
            )
        return SearchResult(
            x=x,
            best_x=state["best_x"],
            best_score=state["best_score"],
            success=state["success"],
            iterations=state["iters"],
            loss=loss,
            nonfinite=state["nonfinite"],
            stats=stats,
            segments=segments,
        )
