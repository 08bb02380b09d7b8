"""Points on the boundaries of a ReLU network's linear regions (TAFA reconstruction, see
:mod:`ipguard_tf.methods.tafa`).

A ReLU network is affine on each linear region, the set of inputs sharing one activation pattern (which ReLUs
are on); each region is a convex polyhedron whose faces are where one hidden neuron's pre-activation z_j is 0.
For each start x0 (a random input) this module finds a point x* on a face of x0's region:

1. a random unit direction d (where the input domain is a box, d's components that would leave the box at once
   are set to 0, so that an image's black pixels do not stop the walk);
2. the segment x0 + t d, t in [0, reach] (cut at the box), is searched by bisection for where the activation
   pattern first changes: regions are convex, so the inputs of the segment with x0's pattern form one interval
   and bisection on "pattern equals x0's" is exact;
3. when exactly one neuron j differs between the bracket's ends, z_j is affine along the bracket (no neuron it
   depends on changes), so its zero is found in closed form by linear interpolation between them: the
   one-dimensional case of the projection x - z(x) grad z / ||grad z||^2, here along d;
4. the point is kept only when re-checked: ``|z_j(x*)| / ||grad z_j|| <= tolerance`` (x* within ``tolerance``
   input units of the neuron's hyperplane) and every other neuron's state at x* is x0's.

Why this and not an LP over the pattern (scipy's HiGHS, as the seed's references suggest): the LP needs one
constraint per neuron (the Fashion-MNIST CNN has 37,632 ReLUs, ResNet-20 144,256), this needs forward passes
only, batched, and gives a point that is exactly on one face with its pattern checked. Starts whose search fails
(no pattern change within reach, several neurons switching together, the re-check failing) are retried with a new
direction and, when every try fails, reported with the reason, never stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from ipguard_tf.core import constants as C
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.io.progress import progress_bar
from ipguard_tf.methods.tafa.probe import ReluProbe

log = logging.getLogger(__name__)

#: bisection steps along a segment (the bracket ends 2^-30 of the reach apart); a stored point lies within
#: TOLERANCE input units of its neuron's hyperplane (re-checked); new directions tried per start
BISECTION_STEPS = C.TAFA_BISECTION_STEPS
TOLERANCE = C.TAFA_TOLERANCE
MAX_TRIES = C.TAFA_MAX_TRIES


@dataclass
class BoundaryPoints:
    """Points on region boundaries with their records (arrays of equal length n)."""

    x: np.ndarray  # (n, ...) the points
    control: np.ndarray  # (n, ...) their starts x0 (inside a region)
    neuron: np.ndarray  # (n,) the neuron j whose pre-activation is 0 at x (index into the concatenation)
    layer: np.ndarray  # (n,) j's ReLU layer
    preact: np.ndarray  # (n,) z_j(x)
    normal: np.ndarray  # (n, ...) grad z_j / ||grad z_j|| (the boundary's normal)
    pattern: np.ndarray  # (n, ceil(total / 8)) uint8: x0's activation pattern, bit-packed
    rejected: Dict[str, int] = field(default_factory=dict)  # failed starts by reason


def _feasible_direction(x0: np.ndarray, rng: np.random.Generator, domain: Optional[Tuple[float, float]]):
    d = rng.standard_normal(x0.shape).astype(np.float32)
    if domain is not None:
        lo, hi = domain
        d[(x0 <= lo) & (d < 0)] = 0.0
        d[(x0 >= hi) & (d > 0)] = 0.0
    norm = np.sqrt(np.sum(d.reshape(len(d), -1) ** 2, axis=1)).reshape((-1,) + (1,) * (d.ndim - 1))
    return d / np.maximum(norm, 1e-12)


def _reach(x0: np.ndarray, d: np.ndarray, reach: float, domain: Optional[Tuple[float, float]]) -> np.ndarray:
    t = np.full(len(x0), reach, np.float64)
    if domain is None:
        return t
    lo, hi = domain
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(d > 0, (hi - x0) / d, np.inf)
        down = np.where(d < 0, (lo - x0) / d, np.inf)
    lim = np.minimum(up, down).reshape(len(x0), -1).min(axis=1)
    return np.minimum(t, lim)


def _grad_of_neuron(probe: ReluProbe, x: np.ndarray, j: np.ndarray) -> np.ndarray:
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        pre, _ = probe(xt)
        total = tf.reduce_sum(tf.gather(pre, tf.constant(j), batch_dims=1))
    return tape.gradient(total, xt).numpy()


def _try(
    probe: ReluProbe,
    x0: np.ndarray,
    p0: np.ndarray,
    rng: np.random.Generator,
    reach: float,
    domain: Optional[Tuple[float, float]],
    steps: int,
    tolerance: float,
):
    """One attempt for a batch of starts with their activation patterns ``p0``: (accepted mask, x*, j, z_j(x*),
    normal, reasons)."""
    b = len(x0)
    shape = (b,) + (1,) * (x0.ndim - 1)
    d = _feasible_direction(x0, rng, domain)
    t_max = _reach(x0, d, reach, domain)
    reasons = np.array([""] * b, dtype=object)
    far = x0 + (t_max.reshape(shape) * d).astype(np.float32)
    if domain is not None:
        far = np.clip(far, *domain)
    same_far = (probe.pattern(far) == p0).all(axis=1)
    reasons[same_far | (t_max <= 0)] = "no boundary within reach"
    lo, hi = np.zeros(b), t_max.copy()
    for _ in range(steps):
        mid = (lo + hi) / 2
        pm = probe.pattern((x0 + (mid.reshape(shape) * d)).astype(np.float32))
        same = (pm == p0).all(axis=1)
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    xa = (x0 + (lo.reshape(shape) * d)).astype(np.float32)
    xb = (x0 + (hi.reshape(shape) * d)).astype(np.float32)
    za, _ = probe(tf.constant(xa))
    zb, _ = probe(tf.constant(xb))
    za, zb = za.numpy(), zb.numpy()
    flips = (zb > 0) != p0
    n_flip = flips.sum(axis=1)
    reasons[(reasons == "") & (n_flip != 1)] = "several neurons switch together"
    j = np.argmax(flips, axis=1)
    zja, zjb = za[np.arange(b), j], zb[np.arange(b), j]
    denom = np.where(zja == zjb, 1.0, zja - zjb)
    frac = np.clip(zja / denom, 0.0, 1.0)
    t_star = lo + (hi - lo) * frac
    xs = (x0 + (t_star.reshape(shape) * d)).astype(np.float32)
    if domain is not None:
        xs = np.clip(xs, *domain)
    zs, _ = probe(tf.constant(xs))
    zs = zs.numpy()
    zj = zs[np.arange(b), j]
    g = _grad_of_neuron(probe, xs, j)
    gnorm = np.sqrt(np.sum(g.reshape(b, -1) ** 2, axis=1))
    off = np.abs(zj) / np.maximum(gnorm, 1e-30)
    reasons[(reasons == "") & ((off > tolerance) | (gnorm == 0))] = "not within tolerance of the hyperplane"
    ps = zs > 0
    ps[np.arange(b), j] = p0[np.arange(b), j]
    reasons[(reasons == "") & ~(ps == p0).all(axis=1)] = "pattern changed"
    normal = g / np.maximum(gnorm, 1e-30).reshape(shape)
    return reasons == "", xs, j, zj, normal.astype(np.float32), reasons


def find_boundary_points(
    probe: ReluProbe,
    starts: np.ndarray,
    *,
    seed: int = 0,
    reach: float = 1.0,
    domain: Optional[Tuple[float, float]] = (0.0, 1.0),
    steps: int = BISECTION_STEPS,
    tolerance: float = TOLERANCE,
    max_tries: int = MAX_TRIES,
    batch_size: int = 128,
    progress: bool = True,
) -> BoundaryPoints:
    """A boundary point for each start where one is found (see the module docstring); ``domain`` the input box
    (None: unbounded, e.g. a generator's latent space), ``reach`` the longest walk from a start."""
    starts = np.asarray(starts, np.float32)
    if starts.ndim < 2 or tuple(starts.shape[1:]) != probe.input_shape:
        raise ParameterError(f"starts of shape {starts.shape[1:]} do not match the model's input {probe.input_shape}")
    if not reach > 0 or not tolerance > 0 or steps < 1 or max_tries < 1:
        raise ParameterError("reach and tolerance must be > 0, steps and max_tries >= 1")
    rng = np.random.default_rng(seed)
    keep = {k: [] for k in ("x", "control", "neuron", "preact", "normal", "pattern")}
    rejected: Dict[str, int] = {}
    with progress_bar(len(starts), desc="TAFA boundary points", enabled=progress, unit="start") as bar:
        for s in range(0, len(starts), batch_size):
            x0 = starts[s : s + batch_size]
            p0_all = probe.pattern(x0)  # the starts' patterns, once for all tries
            todo = np.arange(len(x0))
            last_reason = np.array([""] * len(x0), dtype=object)
            for _ in range(max_tries):
                if not len(todo):
                    break
                p0 = p0_all[todo]
                ok, xs, j, zj, normal, reasons = _try(probe, x0[todo], p0, rng, reach, domain, steps, tolerance)
                for name, arr in (
                    ("x", xs[ok]),
                    ("control", x0[todo][ok]),
                    ("neuron", j[ok]),
                    ("preact", zj[ok]),
                    ("normal", normal[ok]),
                    ("pattern", np.packbits(p0[ok], axis=1)),
                ):
                    keep[name].append(arr)
                last_reason[todo[~ok]] = reasons[~ok]
                todo = todo[~ok]
            for r in last_reason[todo]:
                rejected[r] = rejected.get(r, 0) + 1
            bar.update(len(x0))
    if rejected:
        log.warning(
            "TAFA: %d of %d starts gave no boundary point after %d tries (%s); they are left out",
            sum(rejected.values()),
            len(starts),
            max_tries,
            ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items())),
        )
    cat = {k: (np.concatenate(v) if v else None) for k, v in keep.items()}
    n = 0 if cat["x"] is None else len(cat["x"])
    empty = np.zeros((0,) + probe.input_shape, np.float32)
    neuron = cat["neuron"] if n else np.zeros(0, np.int64)
    return BoundaryPoints(
        x=cat["x"] if n else empty,
        control=cat["control"] if n else empty,
        neuron=neuron.astype(np.int64),
        layer=probe.layer_of(neuron).astype(np.int64),
        preact=(cat["preact"] if n else np.zeros(0)).astype(np.float32),
        normal=cat["normal"] if n else empty,
        pattern=cat["pattern"] if n else np.zeros((0, (probe.total + 7) // 8), np.uint8),
        rejected=rejected,
    )


def check_points(probe: ReluProbe, pts: BoundaryPoints, tolerance: float = TOLERANCE) -> np.ndarray:
    """Per point: True when it is still on its neuron's hyperplane (within ``tolerance`` input units) with the
    recorded pattern for every other neuron (a stored fingerprint re-checked against its target)."""
    if not len(pts.x):
        return np.zeros(0, bool)
    pre, _ = probe(tf.constant(pts.x))
    pre = pre.numpy()
    b = len(pts.x)
    g = _grad_of_neuron(probe, pts.x, pts.neuron)
    gnorm = np.sqrt(np.sum(g.reshape(b, -1) ** 2, axis=1))
    on_plane = np.abs(pre[np.arange(b), pts.neuron]) / np.maximum(gnorm, 1e-30) <= tolerance
    rec = np.unpackbits(pts.pattern, axis=1, count=probe.total).astype(bool)
    now = pre > 0
    now[np.arange(b), pts.neuron] = rec[np.arange(b), pts.neuron]
    return on_plane & (now == rec).all(axis=1)
