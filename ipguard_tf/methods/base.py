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
"""

from __future__ import annotations

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
from ipguard_tf.io.env_info import available_memory, utc_now, versions
from ipguard_tf.models.classifier import Classifier, as_classifier
from ipguard_tf.models.sharding import run_sharded

log = logging.getLogger(__name__)

_N = registry.Param("n", int, N_POINTS, minimum=1)
#: float32 copies of all n points, and of a searched batch, that an extraction holds (for the memory estimate)
POINT_COPIES = 3
SEARCH_COPIES = 6


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
        rng = np.random.default_rng(self.seed)
        t0 = time.perf_counter()
        x0 = self.initial_points(clf, n, train_x, rng, train_y)
        logits0 = clf.predict_logits(x0)
        src = np.argmax(logits0, axis=1).astype(np.int64)
        tgt = self.target_labels(logits0, src, rng)
        params = self.resolved_params(clf)
        ckpt = None
        if checkpoint is not None:
            run_id = content_key(clf.weights_sha256 or clf.name, self.name, params, n, x0, src, tgt)
            ckpt = SearchCheckpoint(checkpoint, run_id, every=checkpoint_every)
        plan = self._prepare(clf, params)
        bs = self.batch_size or n
        parts: List[SearchOutput] = []
        for s in range(0, n, bs):
            xb, sb, tb = x0[s : s + bs], src[s : s + bs], tgt[s : s + bs]
            parts += run_sharded(
                self.distribute,
                len(xb),
                lambda idx, xb=xb, sb=sb, tb=tb: self._search(clf, plan, xb[idx], sb[idx], tb[idx], checkpoint=ckpt),
            )
        res = SearchOutput.concat(parts)
        x = res.x.astype(np.float32)
        converged = res.converged.astype(bool)
        bad = ~np.isfinite(x.reshape(n, -1)).all(axis=1) | res.nonfinite.astype(bool)
        for i in np.flatnonzero(bad):
            log.warning(
                "%s: point %d: NaN or infinite values during the search (after %d iterations); it is put "
                "back at its initial point and flagged converged=False",
                self.name,
                i,
                int(res.iterations[i]),
            )
        x[bad] = x0[bad]
        converged &= ~bad
        x = np.clip(x, 0.0, 1.0)
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
