"""One interface for every fingerprinting method.

Hyperparameters go to the constructor and are checked there against the method's declaration in the registry
(:mod:`ipguard_tf.core.registry`; :class:`~ipguard_tf.core.errors.ParameterError` naming the parameter); the target
model and the data go to :meth:`FingerprintMethod.generate`, which draws the initial points and target labels (paper
Section 5.1.4, Table 3 suffixes -TR, -TL, -RR, -RL), runs the method's search in batches (and shards, under
``tf.distribute``), labels the result with the target and returns a :class:`~ipguard_tf.core.fingerprint.Fingerprint`.

The contract between :meth:`~FingerprintMethod.generate` and a method is explicit: :meth:`_prepare` receives
the classifier and the resolved hyperparameters and returns a *plan* (e.g. the search graph); :meth:`_search`
receives the plan, one batch (or shard) of starting points and the checkpoint, and returns a
:class:`SearchOutput` (points, per-point records, stats, graph calls). Nothing is passed through attributes:
a method instance holds only its hyperparameters, so calling ``generate`` again, or from several shard
threads at once, cannot mix state. The base concatenates the outputs and sums their stats.

Randomness: one ``numpy.random.Generator`` seeded with ``seed`` draws, in this fixed order, the training
examples (T) or the uniform points (R), then the random target labels (R). The draws do not depend on the
batch size, so a fingerprint is reproducible for a given seed.

Replay (issue 34): the starts are never free input. :meth:`FingerprintMethod.derive_starts` is the one place
that draws them, for :meth:`~FingerprintMethod.generate` and for :meth:`~FingerprintMethod.replay` alike, and
the metadata records how (``starts``: the generator, ``kind`` ``uniform`` or ``data``, and for ``data`` the
SHA-256 and length of the training array, :func:`array_sha256`) and where (``platform``: what must be equal for a
replay to be bit-identical, :func:`~ipguard_tf.io.env_info.platform_key`, and the GPUs), so that anyone holding
the target (and, for ``data``, the same training array) recomputes every start, source and target label from the
seed and re-runs the search for any point (:meth:`~FingerprintMethod.replay`; :mod:`ipguard_tf.verification.audit`
compares). A method that overrides :meth:`~FingerprintMethod.generate` (CAE, TAFA) records no ``starts``: its
points depend on more than the target and the seed, and :meth:`FingerprintMethod.replayable` is False for it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ipguard_tf.core import registry
from ipguard_tf.core.constants import IMAGENET_SIZE_MIN_SIDE, LEARNING_RATE_IMAGENET, LEARNING_RATE_SMALL, N_POINTS
from ipguard_tf.core.errors import DataError, ModelError, ParameterError
from ipguard_tf.core.fingerprint import Fingerprint
from ipguard_tf.io.checkpoint import SearchCheckpoint, content_key
from ipguard_tf.io.env_info import available_memory, machine, platform_key, utc_now, versions
from ipguard_tf.models.classifier import Classifier, as_classifier
from ipguard_tf.models.sharding import run_sharded

log = logging.getLogger(__name__)

_N = registry.Param("n", int, N_POINTS, minimum=1)
#: float32 copies of all n points, and of a searched batch, that an extraction holds (for the memory estimate)
POINT_COPIES = 3
SEARCH_COPIES = 6


#: what ``metadata['starts']['generator']`` says: the starts are drawn by this generator from the seed, nothing else
STARTS_GENERATOR = "numpy PCG64 default_rng(seed)"


def array_sha256(a: Any) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order): the identity of the training array the T starts
    are drawn from (``metadata['starts']['data_sha256']``)."""
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256()
    h.update(str(a.dtype).encode())
    h.update(str(a.shape).encode())
    h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


@dataclass
class Starts:
    """The derived beginning of every point's search: ``x0`` the starts, ``scores0`` the target's scores there,
    ``src`` its labels (i), ``tgt`` the target labels (j), and ``record`` how they were derived (the metadata's
    ``starts``)."""

    x0: np.ndarray
    scores0: np.ndarray
    src: np.ndarray
    tgt: np.ndarray
    record: Dict[str, Any]


@dataclass
class Replay:
    """What :meth:`FingerprintMethod.replay` recomputes: the starts of all n points (:class:`Starts`) and, for the
    points ``indices``, the search's results as :meth:`FingerprintMethod.generate` would store them (``x`` clipped to
    [0, 1], a point whose search went non-finite put back at its start and flagged unconverged)."""

    starts: Starts
    indices: np.ndarray
    x: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray
    objective: np.ndarray
    nonfinite: np.ndarray


def default_learning_rate(input_shape) -> float:
    """The paper's Adam learning rate for an input shape: 0.001 for 28x28/32x32, 0.1 for ImageNet size."""
    side = max(int(d) for d in input_shape[:2]) if input_shape and input_shape[0] is not None else 0
    return LEARNING_RATE_IMAGENET if side > IMAGENET_SIZE_MIN_SIDE else LEARNING_RATE_SMALL


@dataclass
class SearchOutput:
    """What :meth:`FingerprintMethod._search` returns for one batch (or shard) of points, in their order.

    ``x`` the points found; ``iterations`` per point; ``objective`` the method's final objective (NaN where it
    has none); ``converged`` whether the search reached its goal; ``nonfinite`` whether its loss or gradient
    became NaN/inf (the base puts such a point back at its start); ``stats`` counters that add up over
    batches (sample-steps, loop seconds); ``segments`` the search's graph calls as (active points,
    iterations), in order."""

    x: np.ndarray
    iterations: np.ndarray
    objective: np.ndarray
    converged: np.ndarray
    nonfinite: Optional[np.ndarray] = None
    stats: Dict[str, float] = field(default_factory=dict)
    segments: List[Tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.nonfinite is None:
            self.nonfinite = np.zeros(len(self.x), bool)

    @classmethod
    def concat(cls, parts: Sequence["SearchOutput"]) -> "SearchOutput":
        """The outputs of consecutive batches as one: arrays concatenated, stats summed, segments chained."""
        stats: Dict[str, float] = {}
        for p in parts:
            for k, v in p.stats.items():
                stats[k] = stats.get(k, 0.0) + float(v)
        return cls(
            **{
                k: np.concatenate([getattr(p, k) for p in parts])
                for k in ("x", "iterations", "objective", "converged", "nonfinite")
            },
            stats=stats,
            segments=[s for p in parts for s in p.segments],
        )


class FingerprintMethod(ABC):
    """Base class: hyperparameter checks, strategies, batching, labelling and bookkeeping shared by all methods.

    Every method takes the common hyperparameters (see :func:`ipguard_tf.core.registry.common_params`):

    * ``init``: ``"T"`` (random training example) or ``"R"`` (uniform in [0, 1]^d) initial points;
    * ``label``: ``"R"`` (random label, never the initial label i) or ``"L"`` (least-likely logit) targets;
    * ``seed``: seed of all random draws;
    * ``batch_size``: points searched together in one batch (``None``: all n at once). Lower it for large
      models whose activations for n points do not fit in memory.

    and two runtime options that are not hyperparameters (not recorded, no effect on the points):

    * ``progress``: show progress bars;
    * ``distribute``: a ``tf.distribute`` strategy (e.g. ``MirroredStrategy()`` over several GPUs). The points
      of each batch are split into one contiguous shard per replica device and searched there concurrently;
      since every point's search is independent, the fingerprint is the same as on one device.

    A subclass sets ``name`` to its registry name and implements :meth:`_search` (and :meth:`_prepare` if it
    builds something once per :meth:`generate`); its hyperparameters are declared in its
    :class:`~ipguard_tf.core.registry.MethodSpec`, set as attributes of the same names by this constructor.
    """

    name = "base"

    @classmethod
    def replayable(cls) -> bool:
        """Whether :meth:`replay` reproduces this method's points from the target, the seed and (for data starts)
        the training array alone: true for every method that keeps the base's :meth:`generate` (starts from
        :meth:`derive_starts`, then :meth:`_search`, which depends on nothing else); false for one that overrides
        it (CAE: surrogate and reference models; TAFA: its own probes)."""
        return cls.generate is FingerprintMethod.generate

    def __init__(self, *, progress: bool = False, distribute: Any = None, **params: Any) -> None:
        for key, value in registry.get(self.name).check(params).items():
            setattr(self, key, value)
        self.progress = bool(progress)
        self.distribute = distribute

    @property
    def spec(self) -> registry.MethodSpec:
        """This method's declaration in the registry."""
        return registry.get(self.name)

    @property
    def strategy(self) -> str:
        """The paper's suffix, e.g. ``"TL"``."""
        return self.init + self.label

    def params(self) -> Dict[str, Any]:
        """Every hyperparameter, as given (``learning_rate`` may be ``None``: chosen from the model)."""
        return {p.name: getattr(self, p.name) for p in self.spec.params}

    def resolved_params(self, clf: Classifier) -> Dict[str, Any]:
        """Every hyperparameter as used on ``clf`` (recorded in the fingerprint metadata): a ``None`` learning
        rate becomes the paper's value for the input size (Section 5.1.3)."""
        p = self.params()
        if "learning_rate" in p and p["learning_rate"] is None:
            p["learning_rate"] = default_learning_rate(clf.input_shape)
        return p

    # -- hooks ------------------------------------------------------------------------------------------------
    def _prepare(self, clf: Classifier, params: Dict[str, Any]) -> Any:
        """Called once per :meth:`generate` before the batches, with the resolved hyperparameters; returns the
        plan handed to every :meth:`_search` call (e.g. the search graph). Must not change ``self``."""
        return None

    @abstractmethod
    def _search(
        self, clf: Classifier, plan: Any, x0: np.ndarray, src: np.ndarray, tgt: np.ndarray, *, checkpoint: Any = None
    ) -> SearchOutput:
        """Search from ``x0`` with initial labels ``src`` and targets ``tgt`` (one batch or shard); save to and
        resume from ``checkpoint`` (a :class:`~ipguard_tf.io.checkpoint.SearchCheckpoint` or None) if the method
        iterates. May run concurrently with other shards: it must not change ``self``."""

    def _metadata(
        self,
        clf: Classifier,
        params: Dict[str, Any],
        *,
        n: int,
        n_converged: int,
        num_classes: int,
        dataset: Optional[str],
        seconds: float,
        point_shape: Sequence[int],
    ) -> Dict[str, Any]:
        """What every fingerprint's metadata records: the method, its statistic and settings, the points' count
        and domain, the target's identity, versions and time (methods add their own records after these)."""
        return {
            "method": self.name,
            "statistic": self.spec.statistic.name,
            "params": params,
            "strategy": self.strategy,
            "n": n,
            "n_converged": n_converged,
            "dataset": dataset,
            "input_shape": list(clf.input_shape) if clf.input_shape else list(point_shape),
            "value_range": list(clf.value_range),
            "num_classes": num_classes,
            "target": {"name": clf.name, "source": clf.source, "weights_sha256": clf.weights_sha256},
            "versions": versions(),
            "created": utc_now(),
            "seconds": round(seconds, 3),
        }

    # -- the one public call ---------------------------------------------------------------------------------
    def initial_points(
        self,
        clf: Classifier,
        n: int,
        train_x: Optional[np.ndarray],
        rng: np.random.Generator,
        train_y: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """Draw n initial points by the init strategy (T: distinct random training examples; R: uniform).
        ``train_y`` (the training labels) is for methods that need them (SAC-w); ignored here."""
        if self.init == "T":
            if train_x is None or len(train_x) == 0:
                raise DataError("init 'T' (training-example initialisation) needs training data")
            idx = rng.choice(len(train_x), size=n, replace=n > len(train_x))
            return clf.check_inputs(np.asarray(train_x)[idx], "training examples").copy()
        if clf.input_shape is None or any(d is None for d in clf.input_shape):
            raise ModelError(f"init 'R' needs a model with a fixed input shape; {clf.name} has {clf.input_shape}")
        return rng.random((n,) + tuple(clf.input_shape), dtype=np.float32)

    def target_labels(self, logits0: np.ndarray, src: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Target label j per point: random j != i (R) or the least-likely logit (L)."""
        c = logits0.shape[1]
        if c < 2:
            raise ModelError("a classifier with fewer than 2 classes cannot be fingerprinted")
        if self.label == "R":
            return (src + rng.integers(1, c, size=len(src))) % c
        tgt = np.argmin(logits0, axis=1)
        same = tgt == src  # only when all logits are equal
        tgt[same] = (src[same] + 1) % c
        return tgt.astype(np.int64)

    def starts_kind(self) -> str:
        """``uniform`` when the starts are drawn uniformly (init R), else ``data``: drawn from the training array."""
        return "uniform" if getattr(self, "init", None) == "R" else "data"

    def derive_starts(
        self,
        clf: Classifier,
        n: int,
        train_x: Optional[np.ndarray],
        train_y: Optional[np.ndarray] = None,
        *,
        scores: Optional[Any] = None,
    ) -> Starts:
        """The starts, source and target labels of n points, drawn from ``seed`` in the fixed order of the module
        docstring: what :meth:`generate` searches from and :meth:`replay` recomputes. ``scores`` (default the
        target's logits) gives the scores the labels are read from; a non-differentiable model's own scores order
        the classes as its logits would."""
        rng = np.random.default_rng(self.seed)
        x0 = self.initial_points(clf, n, train_x, rng, train_y)
        scores0 = np.asarray((scores or clf.predict_logits)(x0))
        src = np.argmax(scores0, axis=1).astype(np.int64)
        tgt = self.target_labels(scores0, src, rng)
        record: Dict[str, Any] = {"generator": STARTS_GENERATOR, "kind": self.starts_kind()}
        if record["kind"] == "data" and train_x is not None:
            record.update(data_sha256=array_sha256(train_x), data_len=int(len(train_x)))
            if train_y is not None:
                record["labels_sha256"] = array_sha256(np.asarray(train_y).reshape(-1))
        return Starts(x0=x0, scores0=scores0, src=src, tgt=tgt, record=record)

    def _search_all(
        self, clf: Classifier, plan: Any, x0: np.ndarray, src: np.ndarray, tgt: np.ndarray, ckpt: Any = None
    ) -> SearchOutput:
        """:meth:`_search` over the points in batches of ``batch_size`` (and shards under ``distribute``)."""
        n = len(x0)
        bs = self.batch_size or n
        parts: List[SearchOutput] = []
        for s in range(0, n, bs):
            xb, sb, tb = x0[s : s + bs], src[s : s + bs], tgt[s : s + bs]
            parts += run_sharded(
                self.distribute,
                len(xb),
                lambda idx, xb=xb, sb=sb, tb=tb: self._search(clf, plan, xb[idx], sb[idx], tb[idx], checkpoint=ckpt),
            )
        return SearchOutput.concat(parts)

    @staticmethod
    def _final_points(res: SearchOutput, x0: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(points, converged, non-finite) as stored: a point whose search produced NaN or infinite values is put
        back at its start and flagged unconverged; all are clipped to [0, 1]."""
        n = len(x0)
        x = res.x.astype(np.float32)
        converged = res.converged.astype(bool)
        bad = ~np.isfinite(x.reshape(n, -1)).all(axis=1) | np.asarray(res.nonfinite, bool)
        x[bad] = x0[bad]
        converged &= ~bad
        return np.clip(x, 0.0, 1.0), converged, bad

    def replay(
        self,
        model: Any,
        n: int,
        train_x: Optional[np.ndarray] = None,
        *,
        train_y: Optional[np.ndarray] = None,
        indices: Optional[Sequence[int]] = None,
        starts: Optional[Starts] = None,
    ) -> Replay:
        """Recompute the starts of a fingerprint of ``n`` points made by :meth:`generate` with these hyperparameters
        (the same seed) and re-run the search for the points ``indices`` (default all), on ``model``.

        Each point's search is independent of the others, so a subset gives each point's own trajectory; only the
        floating-point rounding of batched kernels may differ from the run that made the fingerprint (a batch of
        other size or composition, another machine), see :mod:`ipguard_tf.verification.audit`. A method that
        overrides :meth:`generate` cannot be replayed (:class:`ModelError`). ``starts``: the result of
        :meth:`derive_starts` for these arguments, when the caller has it already."""
        if not self.replayable():
            raise ModelError(f"{self.name} fingerprints cannot be replayed: its points depend on more than the target")
        n = _N.check(n)
        clf = as_classifier(model)
        if starts is None:
            starts = self.derive_starts(clf, n, train_x, train_y)
        idx = np.arange(n) if indices is None else np.asarray(indices, np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ParameterError(f"replay indices must lie in [0, {n}), got {idx.min()}..{idx.max()}")
        x0 = starts.x0[idx]
        if len(idx):
            plan = self._prepare(clf, self.resolved_params(clf))
            res = self._search_all(clf, plan, x0, starts.src[idx], starts.tgt[idx])
        else:
            res = SearchOutput(x0, np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, bool))
        x, converged, bad = self._final_points(res, x0)
        return Replay(
            starts=starts,
            indices=idx,
            x=x,
            converged=converged,
            iterations=np.asarray(res.iterations, np.int64),
            objective=np.asarray(res.objective, np.float32),
            nonfinite=bad,
        )

    # -- what an audit asks of a method (ipguard_tf.verification.audit); the base knows no goal and no claims ------
    def goal_failures(self, scores: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Per point: whether the method's goal fails at a point where the target's logits are ``scores`` (source
        label i, target label j), with float rounding allowed for; an audit asks it of the points a file flags
        converged. The base has no goal to check: all False."""
        return np.zeros(len(scores), bool)

    def claim_failures(self, iterations: np.ndarray, converged: np.ndarray, nonfinite: np.ndarray) -> np.ndarray:
        """Per point: whether a file's record of its search (iterations, converged, put back for non-finite
        values) is impossible for this method; the base checks nothing: all False."""
        return np.zeros(len(iterations), bool)

    def claimed_search(
        self,
        clf: Classifier,
        x0: np.ndarray,
        src: np.ndarray,
        tgt: np.ndarray,
        iterations: np.ndarray,
        converged: np.ndarray,
    ) -> Optional[np.ndarray]:
        """The points' searches run from ``x0`` as a file says they went (its recorded iterations and convergence),
        for an audit to compare a point whose replay converged otherwise (rounding may move the moment of
        convergence); None when the method cannot follow such a claim (the base)."""
        return None

    def _check_memory(self, clf: Classifier, n: int, train_x: Optional[np.ndarray]) -> None:
        """A :class:`ParameterError` with the estimate when ``n`` points cannot fit in the memory available: the
        n points are held a few times over (:data:`POINT_COPIES`: starts, results, labels' logits) and a batch of
        them :data:`SEARCH_COPIES` more times during the search (iterate, Adam's two moments, gradient, best)."""
        shape = tuple(train_x.shape[1:]) if train_x is not None else tuple(clf.input_shape or ())
        if not shape or not all(shape):
            return
        d = int(np.prod(shape))
        need = 4 * d * (POINT_COPIES * n + SEARCH_COPIES * min(self.batch_size or n, n))
        have = available_memory()
        if have is not None and need > have:
            raise ParameterError(
                f"n = {n} points of shape {shape} need about {need / 2**30:.3g} GiB and {have / 2**30:.3g} GiB is "
                "available: use a smaller --n (and --batch-size to search them a batch at a time)"
            )

    def generate(
        self,
        model: Any,
        n: int = N_POINTS,
        train_x: Optional[np.ndarray] = None,
        *,
        train_y: Optional[np.ndarray] = None,
        dataset: Optional[str] = None,
        checkpoint: Optional[Union[str, Path]] = None,
        checkpoint_every: float = 60.0,
    ) -> Fingerprint:
        """Extract a fingerprint of ``n`` points from ``model`` (paper Section 4.2, Extract).

        ``train_x`` (images in [0, 1]) is needed for the T initialisation. Non-converged points are kept,
        flagged ``converged=False`` and reported in a warning. A point whose search produced NaN or infinite
        values is put back at its initial point, flagged unconverged and listed in the metadata
        (``nonfinite_points``) and a warning.

        ``checkpoint`` names a file where the gradient searches save their state every ``checkpoint_every``
        seconds; calling ``generate`` again with the same arguments after an interruption (on this instance or
        a new one) resumes from it and gives the same fingerprint (see :mod:`ipguard_tf.io.checkpoint`). The
        caller deletes the file once the fingerprint is saved.
        """
        n = _N.check(n)
        clf = as_classifier(model)
        if self.spec.needs_logits and not clf.has_logits:
            raise ModelError(f"{self.name} needs a model with logits; {clf.name} only returns labels")
        self._check_memory(clf, n, train_x)
        t0 = time.perf_counter()
        # a method that needs no gradient (random points, AKH) runs on a TFLite/ONNX file's own outputs too
        starts = self.derive_starts(clf, n, train_x, train_y, scores=None if clf.has_logits else clf.predict_scores)
        x0, logits0, src, tgt = starts.x0, starts.scores0, starts.src, starts.tgt
        params = self.resolved_params(clf)
        ckpt = None
        if checkpoint is not None:
            run_id = content_key(clf.weights_sha256 or clf.name, self.name, params, n, x0, src, tgt)
            ckpt = SearchCheckpoint(checkpoint, run_id, every=checkpoint_every)
        plan = self._prepare(clf, params)
        res = self._search_all(clf, plan, x0, src, tgt, ckpt)
        x, converged, bad = self._final_points(res, x0)
        for i in np.flatnonzero(bad):
            log.warning(
                "%s: point %d: NaN or infinite values during the search (after %d iterations); it is put "
                "back at its initial point and flagged converged=False",
                self.name,
                i,
                int(res.iterations[i]),
            )
        if self.spec.statistic.needs_scores:  # the target's logits at the points (needs_logits), and its labels
            outputs = clf.predict_scores(x)
            y = np.argmax(outputs, axis=1).astype(np.int64)
        else:
            outputs, y = None, clf.predict_labels(x)
        seconds = time.perf_counter() - t0
        distortion = np.sqrt(np.sum((x - x0).reshape(n, -1).astype(np.float64) ** 2, axis=1))
        if not converged.all():
            log.warning(
                "%s: %d of %d points did not converge within the iteration budget; they are kept and "
                "flagged converged=False",
                self.name,
                int((~converged).sum()),
                n,
            )
        meta = self._metadata(
            clf,
            params,
            n=n,
            n_converged=int(converged.sum()),
            num_classes=int(logits0.shape[1]),
            dataset=dataset,
            seconds=seconds,
            point_shape=x.shape[1:],
        )
        meta.update(
            starts=starts.record,
            platform=dict(platform_key(), gpus=machine()["gpus"]),
            stats=res.stats,
            segments=[list(s) for s in res.segments],
            nonfinite_points=[int(i) for i in np.flatnonzero(bad)],
        )
        if outputs is not None:
            meta["outputs_kind"] = "logits"
        return Fingerprint(
            x=x,
            y=y,
            source=src,
            target=tgt,
            iterations=res.iterations,
            objective=res.objective,
            converged=converged,
            distortion=distortion,
            metadata=meta,
            outputs=outputs,
        )
