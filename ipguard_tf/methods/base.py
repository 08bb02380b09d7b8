"""One interface for every fingerprinting method.

Hyperparameters go to the constructor and are validated there (``ValueError`` naming the parameter); the
target model and the data go to :meth:`FingerprintMethod.generate`, which draws the initial points and target
labels (paper Section 5.1.4, Table 3 suffixes -TR, -TL, -RR, -RL), runs the method's search in batches, labels
the result with the target and returns a :class:`~ipguard_tf.fingerprint.Fingerprint`.

Randomness: one ``numpy.random.Generator`` seeded with ``seed`` draws, in this fixed order, the training
examples (T) or the uniform points (R), then the random target labels (R). The draws do not depend on the
batch size, so a fingerprint is reproducible for a given seed.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from ..constants import (
    DEFAULT_INIT,
    DEFAULT_LABEL,
    IMAGENET_SIZE_MIN_SIDE,
    INIT_STRATEGIES,
    LABEL_STRATEGIES,
    LEARNING_RATE_IMAGENET,
    LEARNING_RATE_SMALL,
    N_POINTS,
)
from ..env_info import utc_now, versions
from ..errors import DataError, ModelError
from ..fingerprint import Fingerprint
from ..models import Classifier, as_classifier
from ..sharding import run_sharded

log = logging.getLogger(__name__)


def default_learning_rate(input_shape) -> float:
    """The paper's Adam learning rate for an input shape: 0.001 for 28x28/32x32, 0.1 for ImageNet size."""
    side = max(int(d) for d in input_shape[:2]) if input_shape and input_shape[0] is not None else 0
    return LEARNING_RATE_IMAGENET if side > IMAGENET_SIZE_MIN_SIDE else LEARNING_RATE_SMALL


def _check_choice(name: str, value: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_float(name: str, value: Any, minimum: float, *, strict: bool = False, maximum: Optional[float] = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or (v <= minimum if strict else v < minimum) or (maximum is not None and v > maximum):
        rng = f"{'>' if strict else '>='} {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ValueError(f"{name} must be a finite number {rng}, got {value!r}")
    return v


class FingerprintMethod(ABC):
    """Base class: strategy handling, batching, labelling and bookkeeping shared by all methods.

    Args:
        init: ``"T"`` (random training example) or ``"R"`` (uniform in [0, 1]^d) initial points.
        label: ``"R"`` (random label, never the initial label i) or ``"L"`` (least-likely logit) target labels.
        seed: seed of all random draws.
        batch_size: points searched together in one batch (``None``: all n at once). Lower it for large
            models whose activations for n points do not fit in memory.
        progress: show progress bars.
        distribute: a ``tf.distribute`` strategy (e.g. ``MirroredStrategy()`` over several GPUs). The points of
            each batch are split into one contiguous shard per replica device and searched there concurrently;
            since every point's search is independent, the fingerprint is the same as on one device.
    """

    name = "base"

    def __init__(self, *, init: str = DEFAULT_INIT, label: str = DEFAULT_LABEL, seed: int = 0,
                 batch_size: Optional[int] = None, progress: bool = False, distribute: Any = None) -> None:
        self.init = _check_choice("init", init, INIT_STRATEGIES)
        self.label = _check_choice("label", label, LABEL_STRATEGIES)
        self.seed = _check_int("seed", seed, 0)
        self.batch_size = None if batch_size is None else _check_int("batch_size", batch_size, 1)
        self.progress = bool(progress)
        self.distribute = distribute

    @property
    def strategy(self) -> str:
        """The paper's suffix, e.g. ``"TL"``."""
        return self.init + self.label

    def params(self) -> Dict[str, Any]:
        """Every hyperparameter (recorded in the fingerprint metadata)."""
        return {"init": self.init, "label": self.label, "seed": self.seed, "batch_size": self.batch_size}

    # -- hooks ------------------------------------------------------------------------------------------------
    def _prepare(self, clf: Classifier) -> None:
        """Called once per :meth:`generate` before the batches (e.g. to build the search graph)."""

    @abstractmethod
    def _search(self, clf: Classifier, x0: np.ndarray, src: np.ndarray, tgt: np.ndarray) -> Dict[str, np.ndarray]:
        """Search from ``x0`` with initial labels ``src`` and targets ``tgt``.

        Returns per-point arrays: ``x``, ``iterations``, ``objective``, ``converged``.
        """

    def _needs_logits(self) -> bool:
        return True

    _checkpoint: Any = None

    def _search_distributed(self, clf: Classifier, x0, src, tgt) -> Dict[str, np.ndarray]:
        outs = run_sharded(self.distribute, len(x0), lambda idx: self._search(clf, x0[idx], src[idx], tgt[idx]))
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    # -- the one public call ---------------------------------------------------------------------------------
    def initial_points(self, clf: Classifier, n: int, train_x: Optional[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """Draw n initial points by the init strategy (T: distinct random training examples; R: uniform)."""
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

    def generate(self, model: Any, n: int = N_POINTS, train_x: Optional[np.ndarray] = None, *,
                 dataset: Optional[str] = None, checkpoint: Optional[Union[str, Path]] = None,
                 checkpoint_every: float = 60.0) -> Fingerprint:
        """Extract a fingerprint of ``n`` points from ``model`` (paper Section 4.2, Extract).

        ``train_x`` (images in [0, 1]) is needed for the T initialisation. Non-converged points are kept,
        flagged ``converged=False`` and reported in a warning. A point whose search produced NaN or infinite
        values is put back at its initial point, flagged unconverged and listed in the metadata
        (``nonfinite_points``) and a warning.

        ``checkpoint`` names a file where the gradient searches save their state every ``checkpoint_every``
        seconds; calling ``generate`` again with the same arguments after an interruption resumes from it
        and gives the same fingerprint (see :mod:`ipguard_tf.checkpoint`). The caller deletes the file once
        the fingerprint is saved.
        """
        n = _check_int("n", n, 1)
        clf = as_classifier(model)
        if self._needs_logits() and not clf.has_logits:
            raise ModelError(f"{self.name} needs a model with logits; {clf.name} only returns labels")
        rng = np.random.default_rng(self.seed)
        t0 = time.perf_counter()
        x0 = self.initial_points(clf, n, train_x, rng)
        logits0 = clf.predict_logits(x0)
        src = np.argmax(logits0, axis=1).astype(np.int64)
        tgt = self.target_labels(logits0, src, rng)
        self._checkpoint = None
        if checkpoint is not None:
            from ..checkpoint import SearchCheckpoint, content_key

            run_id = content_key(clf.weights_sha256 or clf.name, self.name, self.params(), n, x0, src, tgt)
            self._checkpoint = SearchCheckpoint(checkpoint, run_id, every=checkpoint_every)
        self._prepare(clf)
        bs = self.batch_size or n
        parts = []
        for s in range(0, n, bs):
            parts.append(self._search_distributed(clf, x0[s : s + bs], src[s : s + bs], tgt[s : s + bs]))
        res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        x = res["x"].astype(np.float32)
        converged = res["converged"].astype(bool)
        bad = ~np.isfinite(x.reshape(n, -1)).all(axis=1) | res.get("nonfinite", np.zeros(n, bool))
        for i in np.flatnonzero(bad):
            log.warning("%s: point %d: NaN or infinite values during the search (after %d iterations); it is put "
                        "back at its initial point and flagged converged=False", self.name, i, int(res["iterations"][i]))
        x[bad] = x0[bad]
        converged &= ~bad
        x = np.clip(x, 0.0, 1.0)
        y = clf.predict_labels(x)
        seconds = time.perf_counter() - t0
        distortion = np.sqrt(np.sum((x - x0).reshape(n, -1).astype(np.float64) ** 2, axis=1))
        if not converged.all():
            log.warning("%s: %d of %d points did not converge within the iteration budget; they are kept and "
                        "flagged converged=False", self.name, int((~converged).sum()), n)
        meta = {
            "method": self.name,
            "params": self.params(),
            "strategy": self.strategy,
            "n": n,
            "n_converged": int(converged.sum()),
            "dataset": dataset,
            "input_shape": list(clf.input_shape) if clf.input_shape else list(x.shape[1:]),
            "value_range": list(clf.value_range),
            "num_classes": int(logits0.shape[1]),
            "target": {"name": clf.name, "source": clf.source, "weights_sha256": clf.weights_sha256},
            "versions": versions(),
            "created": utc_now(),
            "seconds": round(seconds, 3),
            "stats": {k: float(v) for k, v in getattr(self, "_stats", {}).items()},
            "nonfinite_points": [int(i) for i in np.flatnonzero(bad)],
        }
        return Fingerprint(x=x, y=y, source=src, target=tgt, iterations=res["iterations"],
                           objective=res["objective"], converged=converged, distortion=distortion, metadata=meta)
