"""Reference points for the extraction benchmark (``experiments/bench_extraction.py``).

* :func:`eager_per_point_ipguard`: IPGuard the way the only public TensorFlow implementation does it (DeepJudge's
  ``CBA`` fingerprinting): one point at a time, a Python loop of eager steps, a Keras Adam optimizer applied to a
  ``tf.Variable``, and the model evaluated several times per step (the loss with its gradient, then the logits
  again to test the stopping rule). Same objective (Eq. 5), learning rate, iteration cap and stopping rule as
  the library, so only the execution strategy differs.
* :func:`forward_backward_seconds`: the floor, one bare forward + backward pass of a batch through the model;
  :func:`same_batch_floor`: the floor for the batches a search actually ran (its ``segments`` record).
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, Tuple

import numpy as np
import tensorflow as tf

from ipguard_tf.core.constants import MAX_ITERATIONS
from ipguard_tf.methods.ipguard import ipguard_objective


def eager_per_point_ipguard(
    logits_fn: Callable,
    x0: np.ndarray,
    src: np.ndarray,
    tgt: np.ndarray,
    k: float,
    learning_rate: float,
    max_iter: int = MAX_ITERATIONS,
) -> Dict[str, np.ndarray]:
    """Eager, per-point IPGuard (DeepJudge-CBA style); returns x and iterations per point."""
    import keras

    xs, iters = [], []
    for p in range(len(x0)):
        x = tf.Variable(x0[p : p + 1])
        opt = keras.optimizers.Adam(learning_rate=learning_rate, epsilon=1e-8)
        i_, j_ = tf.constant(src[p : p + 1]), tf.constant(tgt[p : p + 1])
        it = 0
        for it in range(max_iter + 1):
            obj = ipguard_objective(logits_fn(x), i_, j_, k)  # evaluation 1: the stopping rule
            if float(obj[0]) <= 0.0 or it == max_iter:
                break
            with tf.GradientTape() as tape:  # evaluation 2: the loss and its gradient
                loss = tf.reduce_sum(ipguard_objective(logits_fn(x), i_, j_, k))
            opt.apply_gradients([(tape.gradient(loss, x), x)])
            x.assign(tf.clip_by_value(x, 0.0, 1.0))
        xs.append(x.numpy()[0])
        iters.append(it)
    return {"x": np.stack(xs), "iterations": np.array(iters)}


def forward_backward_seconds(logits_fn: Callable, x: np.ndarray, repeats: int = 20) -> float:
    """Median seconds of one forward + backward pass (gradient w.r.t. the input) of batch ``x``, in a graph."""

    @tf.function(reduce_retracing=True)
    def fb(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            z = tf.reduce_sum(logits_fn(x))
        return tape.gradient(z, x)

    xt = tf.constant(x)
    fb(xt)
    fb(xt)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fb(xt).numpy()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def same_batch_floor(logits_fn: Callable, pool: np.ndarray, segments: Iterable[Tuple[int, int]]) -> float:
    """Seconds of bare forward+backward passes for the batches a search ran: the sum over its graph calls
    (``(active points, iterations)``, as :attr:`ipguard_tf.methods.search.SearchResult.segments` records them) of
    iterations x the floor of a batch of that size, taken from the first rows of ``pool``."""
    per_size: Dict[int, int] = {}
    for b, steps in segments:
        per_size[b] = per_size.get(b, 0) + steps
    return sum(steps * forward_backward_seconds(logits_fn, pool[:b], repeats=10) for b, steps in per_size.items())
