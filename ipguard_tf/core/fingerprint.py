"""The fingerprint value (paper Section 4.1): the points, their labels under the target, the per-point search records
and, for some methods, the target's outputs; :func:`check_points` says what is wrong with one read from a file.

Its file (a checked ``.npz`` archive, written atomically, read without pickle) is
:mod:`ipguard_tf.io.fingerprint_file`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np

from ipguard_tf.core.calibration import subset_metadata
from ipguard_tf.core.checks import check_number
from ipguard_tf.core.errors import ModelError, ParameterError

log = logging.getLogger(__name__)


SCHEMA = "ipguard_tf.fingerprint/1"


#: per-point arrays and their dtypes
POINT_FIELDS = {
    "x": np.float32,  # the fingerprinting data points, in [0, 1]
    "y": np.int64,  # the target's label at x (the fingerprint label)
    "source": np.int64,  # i: label the target predicts at the initial point
    "target": np.int64,  # j: the target label of the search
    "iterations": np.int64,  # optimiser iterations used
    "objective": np.float32,  # final value of the method's objective (NaN where it has none)
    "converged": np.bool_,  # the search reached its goal (IPGuard: objective 0)
    "distortion": np.float32,  # L2 distance from the initial point
}


#: optional per-point arrays: present in the files of methods whose statistic needs them
OPTIONAL_FIELDS = {
    "outputs": np.float32,  # the target's outputs at x, (n, D): class scores (SAC's correlation; metadata
    # outputs_kind) or, for TAFA, any task's outputs flattened
    "control": np.float32,  # TAFA: each point's start, inside a linear region of the target (like x)
    "normal": np.float32,  # TAFA: the unit normal of the boundary each point lies on (like x)
    "neuron": np.int64,  # TAFA: the neuron whose pre-activation is 0 at x (index over all hidden ReLUs)
    "layer": np.int64,  # TAFA: that neuron's ReLU layer
    "pattern": np.uint8,  # TAFA: the activation pattern of the control's region, bit-packed (n, bytes)
    "slopes": np.float32,  # TAFA: the target's one-sided slopes along the normal at x, (n, 2 D) (tafa.statistic)
}


#: tasks a fingerprinted model may have (metadata ``task``; files without one are classifiers'); only a
#: classifier's points carry labels (``y`` is -1 for the others)
TASKS = ("classifier", "regressor", "generator")


@dataclass
class Fingerprint:
    """IPGuard's ``f_Ct = {(x_1, y_1), ..., (x_n, y_n)}`` (paper Section 4.1) with the search records."""

    x: np.ndarray
    y: np.ndarray
    source: np.ndarray
    target: np.ndarray
    iterations: np.ndarray
    objective: np.ndarray
    converged: np.ndarray
    distortion: np.ndarray
    metadata: Dict[str, Any] = field(default_factory=dict)
    #: content SHA-256 of the file it was loaded from (None for a fingerprint not read from a file)
    sha256: Optional[str] = field(default=None, compare=False)
    #: the target's class scores at the points (SAC; None for methods verified by labels)
    outputs: Optional[np.ndarray] = None
    #: TAFA's per-point records (see OPTIONAL_FIELDS; None for other methods)
    control: Optional[np.ndarray] = None
    normal: Optional[np.ndarray] = None
    neuron: Optional[np.ndarray] = None
    layer: Optional[np.ndarray] = None
    pattern: Optional[np.ndarray] = None
    slopes: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        for name, dt in POINT_FIELDS.items():
            setattr(self, name, np.asarray(getattr(self, name), dtype=dt))
        for name, dt in OPTIONAL_FIELDS.items():
            if getattr(self, name) is not None:
                setattr(self, name, np.asarray(getattr(self, name), dtype=dt))
        if self.outputs is not None and self.outputs.ndim != 2:
            raise ValueError(f"fingerprint field 'outputs' has shape {self.outputs.shape}, expected (n, C)")
        if self.slopes is not None and self.slopes.ndim != 2:
            raise ValueError(f"fingerprint field 'slopes' has shape {self.slopes.shape}, expected (n, 2 D)")
        for name in ("control", "normal"):
            a = getattr(self, name)
            if a is not None and a.shape != self.x.shape:
                raise ValueError(f"fingerprint field {name!r} has shape {a.shape}, x has {self.x.shape}")
        n = len(self.x)
        for name in self._fields():
            if len(getattr(self, name)) != n:
                raise ValueError(f"fingerprint field {name!r} has {len(getattr(self, name))} entries, x has {n}")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def n_converged(self) -> int:
        return int(self.converged.sum())

    def _fields(self):
        return list(POINT_FIELDS) + [k for k in OPTIONAL_FIELDS if getattr(self, k) is not None]

    def subset(self, mask: np.ndarray) -> "Fingerprint":
        """A fingerprint of the selected points (e.g. ``fp.subset(fp.converged)``); a calibration in the metadata
        is restricted to the same points."""

        return Fingerprint(
            **{k: getattr(self, k)[mask] for k in self._fields()}, metadata=subset_metadata(dict(self.metadata), mask)
        )

    def converged_only(self) -> "Fingerprint":
        """The converged points only (issue 16: the paper's searches all converged, so only they are what the
        paper verified with); the metadata says so (``points``). :class:`~ipguard_tf.core.errors.ModelError` when no
        point converged."""

        if not self.converged.any():
            raise ModelError(
                f"none of the fingerprint's {len(self)} points converged; --converged-only leaves nothing to verify"
            )
        out = self.subset(self.converged.astype(bool))
        out.metadata["points"] = f"converged only ({out.n_converged} of {len(self)})"
        return out

    def arrays(self) -> Dict[str, np.ndarray]:
        """Every per-point array the fingerprint holds (the optional ones where present)."""
        return {k: getattr(self, k) for k in self._fields()}


#: metadata values that a verification computes with, and what each must be (absent: the default applies);
#: a file written by hand through the public API must not turn them into a wrong number or an internal error
NUMERIC_METADATA = {
    "input_scale": dict(low=0.0, low_open=True),  # points are multiplied by it before a suspect sees them
    "epsilon": dict(low=0.0, low_open=True),  # TAFA's probe half-width
    "output_size": dict(low=1, integer=True),  # TAFA: the target's outputs per point
}
OUTPUTS_KINDS = ("logits", "probabilities")


def check_metadata(metadata: Dict[str, Any]) -> str:
    """'' when the metadata values a verification computes with are of the right type and range (finite
    numbers where numbers are used, a known ``outputs_kind``, an ``input_range`` of two finite numbers), else
    what is wrong, in one line."""
    if not isinstance(metadata, dict):
        return f"metadata is a {type(metadata).__name__}, expected a JSON object"
    for key, rule in NUMERIC_METADATA.items():
        if metadata.get(key) is not None:
            try:
                check_number(metadata[key], f"metadata {key}", **rule)  # type: ignore[arg-type]
            except ParameterError as exc:
                return str(exc)
    kind = metadata.get("outputs_kind", "logits")
    if kind not in OUTPUTS_KINDS:
        return f"metadata outputs_kind must be one of {', '.join(OUTPUTS_KINDS)}, got {kind!r}"
    domain = metadata.get("input_range", [0.0, 1.0])
    if domain is not None:
        ok = isinstance(domain, list) and len(domain) == 2
        try:
            lo, hi = (check_number(v, "metadata input_range") for v in domain) if ok else (0.0, 0.0)
        except ParameterError:
            ok = False
        if not ok or not lo < hi:
            return f"metadata input_range must be two finite numbers [low, high] with low < high, got {domain!r}"
    for key in ("statistic", "method", "task"):
        if key in metadata and not isinstance(metadata[key], str):
            return f"metadata {key} must be a string, got {metadata[key]!r}"
    return ""


def check_points(fp: Fingerprint) -> str:
    """'' when the points make sense, else what is wrong: no points, non-finite or out-of-[0, 1] points,
    labels outside the classes the metadata names."""
    if len(fp) == 0:
        return "the fingerprint has no points"
    if fp.x.ndim < 2:
        return f"points have shape {fp.x.shape}, expected (n, ...)"
    if not np.all(np.isfinite(fp.x)):
        return "points contain NaN or infinite values"
    problem = check_metadata(fp.metadata)
    if problem:
        return problem
    task = fp.metadata.get("task", "classifier")
    if task not in TASKS:
        return f"metadata task {task!r} is not one of {', '.join(TASKS)}"
    domain = fp.metadata.get("input_range", [0.0, 1.0])  # None: unbounded (a generator's latent space)
    if domain is not None and (fp.x.min() < domain[0] or fp.x.max() > domain[1]):
        return f"points lie in [{fp.x.min():.4g}, {fp.x.max():.4g}], outside [{domain[0]:g}, {domain[1]:g}]"
    for name in ("control", "normal", "outputs", "slopes"):
        a = getattr(fp, name)
        if a is not None and not np.all(np.isfinite(a)):
            return f"{name} contain NaN or infinite values"
    if task != "classifier":
        if np.any(fp.y != -1):
            return f"a {task}'s points carry no labels (y must be -1)"
        return _check_shape(fp)
    c = fp.metadata.get("num_classes")
    if not isinstance(c, int) or isinstance(c, bool) or c < 2:
        return f"metadata num_classes is {c!r}, expected an integer >= 2"
    if fp.y.min() < 0 or fp.y.max() >= c:
        return f"labels lie in [{fp.y.min()}, {fp.y.max()}], outside the {c} classes"
    if fp.outputs is not None and (fp.outputs.shape[1] != c or not np.all(np.isfinite(fp.outputs))):
        return f"outputs have shape {fp.outputs.shape} or non-finite values; expected finite (n, {c})"
    return _check_shape(fp)


def _check_shape(fp: Fingerprint) -> str:
    shape = fp.metadata.get("input_shape")
    if shape is not None and (
        not isinstance(shape, list)
        or (all(isinstance(d, int) for d in shape) and int(np.prod(shape)) != int(np.prod(fp.x.shape[1:])))
    ):
        return f"metadata input_shape {shape!r} does not match points of shape {list(fp.x.shape[1:])}"
    return ""
