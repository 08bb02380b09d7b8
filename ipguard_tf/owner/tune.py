"""``--k auto``: IPGuard's setting chosen from the target itself, before any suspect is seen (issue 30).

The paper picks k per dataset by hand (Section 5.3: larger k moves the points away from the boundary, which makes
the fingerprint more robust to post-processing and less unique); a model owner's logit scale differs from the
paper's, so :data:`~ipguard_tf.core.constants.DEFAULT_K` may fail on their model (a copy pruned 10 % matching 0.10).
Here each candidate setting (k, label strategy, iterations) is extracted on the target and scored on the owner's
self-made copies (:mod:`ipguard_tf.zoo.copies`), on the same architecture with fresh random weights (always
available: a fingerprint such a model matches says nothing, e.g. one whose points all carry the one label uniform
noise gets) and, where there are any, on negatives (independently trained models). A candidate's margin is
``min(copy rates) - max(random and negative rates)``:

* with negatives, the setting with the largest margin;
* without negatives, uniqueness against trained models cannot be measured and falls with k (paper Section 5.3), so
  the setting is the first (smallest k) whose margin is within :data:`TOLERANCE` of the largest.

The k grid is relative to the target's logit scale: :data:`K_FACTORS` times the median, over the starting points,
of the standard deviation of the target's logits across classes (a random-weight network's logits vary by tenths,
a trained one's by units); while the best margin lies at the grid's largest k and still rises, k x
:data:`EXTEND_FACTOR` is tried too (at most :data:`MAX_EXTENSIONS` times), so that the grid's edge does not decide.
Ties go to the earlier candidate (smaller k, the paper's L before R). The candidates, their rates and the choice are
recorded in the fingerprint's metadata (``owner.tuning``). These rules and the grid are our choices, made before any
measurement except the extension (see :data:`EXTEND_FACTOR`); the paper is silent on choosing k for a new model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ipguard_tf.core.constants import MAX_ITERATIONS
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.core.statistics import matching_rate
from ipguard_tf.io.progress import progress_bar

log = logging.getLogger(__name__)

#: k tried, as multiples of the target's logit scale (see the module docstring), smallest first
K_FACTORS: Tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
#: label strategies tried at each k (the paper's best, L, first)
LABELS: Tuple[str, ...] = ("L", "R")
#: without negatives: the first setting whose margin is within this of the best one is taken
TOLERANCE = 0.05
#: the grid grows by this factor of k while the best margin is at its largest k and still rising, at most
#: MAX_EXTENSIONS times (added after the first cifar-shaped run of experiments/owner_path.py showed the margin
#: still rising at the grid's edge; see its README)
EXTEND_FACTOR = 3.0
MAX_EXTENSIONS = 2


@dataclass(frozen=True)
class Setting:
    """One candidate: IPGuard's k, initialisation and label strategy, and iteration cap."""

    k: float
    init: str
    label: str
    max_iter: int = MAX_ITERATIONS

    @property
    def strategy(self) -> str:
        return f"-{self.init}{self.label}"

    def params(self) -> Dict[str, Any]:
        return {"k": float(self.k), "init": self.init, "label": self.label, "max_iter": int(self.max_iter)}

    def __str__(self) -> str:
        return f"k={self.k:g} {self.strategy}"


def _two_digits(v: float) -> float:
    return float(f"{v:.2g}")


def logit_scale(logits: np.ndarray) -> float:
    """The median, over points, of the standard deviation of the logits across classes."""
    z = np.asarray(logits, np.float64)
    if z.ndim != 2 or not np.all(np.isfinite(z)):
        raise ParameterError(f"logits must be a finite (n, classes) array, got shape {z.shape}")
    return float(np.median(z.std(axis=1)))


def candidates(
    init: str, scale: float, factors: Sequence[float] = K_FACTORS, labels: Sequence[str] = LABELS
) -> List[Setting]:
    """The grid k = ``scale`` x ``factors`` (two significant digits) in the order ties are broken in: k ascending,
    then the label strategies in ``labels`` order."""
    if not factors:
        raise ParameterError("at least one k is needed")
    if not (np.isfinite(scale) and scale > 0):
        raise ParameterError(f"the target's logit scale must be a positive number, got {scale}")
    ks = sorted({_two_digits(scale * f) for f in factors})
    return [Setting(k, init, lab) for k in ks for lab in labels]


@dataclass
class Trial:
    """One candidate's fingerprint and the matching rates of the copies and negatives on it."""

    setting: Setting
    fingerprint: Any
    copies: Dict[str, float]
    negatives: Dict[str, float]
    random: Dict[str, float] = field(default_factory=dict)

    @property
    def worst_copy(self) -> float:
        return min(self.copies.values()) if self.copies else float("nan")

    @property
    def worst_negative(self) -> Optional[float]:
        return max(self.negatives.values()) if self.negatives else None

    @property
    def worst_random(self) -> Optional[float]:
        return max(self.random.values()) if self.random else None

    @property
    def margin(self) -> Optional[float]:
        others = [w for w in (self.worst_negative, self.worst_random) if w is not None]
        return None if not others else self.worst_copy - max(others)

    @property
    def score(self) -> float:
        """What the choice compares: the margin, or the worst copy's rate when there is nothing to compare with."""
        return round(self.margin if self.margin is not None else self.worst_copy, 9)

    def record(self) -> Dict[str, Any]:
        fp = self.fingerprint
        return {
            "setting": str(self.setting),
            **self.setting.params(),
            "n_converged": int(fp.n_converged),
            "seconds": float(fp.metadata.get("seconds", 0.0)),
            "copies": {k: round(v, 4) for k, v in self.copies.items()},
            "negatives": {k: round(v, 4) for k, v in self.negatives.items()},
            "random": {k: round(v, 4) for k, v in self.random.items()},
            "worst_copy": round(self.worst_copy, 4),
            "worst_random": None if self.worst_random is None else round(self.worst_random, 4),
            "worst_negative": None if self.worst_negative is None else round(self.worst_negative, 4),
            "margin": None if self.margin is None else round(self.margin, 4),
        }


@dataclass
class Tuning:
    """The trials in candidate order, the chosen one, and the rule that chose it."""

    trials: List[Trial]
    chosen: int
    rule: str
    skipped: List[str] = field(default_factory=list)

    @property
    def best(self) -> Trial:
        return self.trials[self.chosen]

    @property
    def uniqueness_measured(self) -> bool:
        return bool(self.best.negatives)

    def record(self) -> Dict[str, Any]:
        return {
            "rule": self.rule,
            "chosen": str(self.best.setting),
            "uniqueness_measured": self.uniqueness_measured,
            "candidates": [t.record() for t in self.trials],
            "not_tried": list(self.skipped),
        }

    def summary(self) -> str:
        """One screen: a row per candidate (worst copy, worst negative, margin, converged points), the choice."""
        neg = self.uniqueness_measured
        lines = [
            "worst rates: copy (lowest of the copies), random (highest of the random-weight models), neg (highest "
            "of the negatives)",
            f"{'setting':<13} {'conv':>5} {'copy':>5} {'random':>6} {'neg':>5} {'margin':>7}  copies",
        ]
        for i, t in enumerate(self.trials):
            mark = "*" if i == self.chosen else " "
            wn = "-" if t.worst_negative is None else f"{t.worst_negative:.2f}"
            wr = "-" if t.worst_random is None else f"{t.worst_random:.2f}"
            mg = "-" if t.margin is None else f"{t.margin:+.2f}"
            rates = " ".join(f"{name}={r:.2f}" for name, r in t.copies.items())
            conv = t.fingerprint.n_converged
            lines.append(f"{mark}{str(t.setting):<12} {conv:>5} {t.worst_copy:>5.2f} {wr:>6} {wn:>5} {mg:>7}  {rates}")
        lines.append(f"chosen: {self.best.setting} ({self.rule})")
        if self.skipped:
            lines.append(f"not tried (an earlier setting separated perfectly): {', '.join(self.skipped)}")
        if not neg:
            lines.append(
                "uniqueness against independently trained models was not measured, only against random weights "
                "(--negatives N with labelled --data, or a folder)"
            )
        return "\n".join(lines)


def _rates(fp: Any, models: Sequence[Tuple[str, Any]]) -> Dict[str, float]:
    return {name: matching_rate(fp.y, np.asarray(clf.predict_labels(fp.x)).reshape(-1)) for name, clf in models}


def choose(trials: Sequence[Trial]) -> Tuple[int, str]:
    """(index of the chosen trial, the rule used): see the module docstring."""
    if not trials:
        raise ParameterError("no candidate was tried")

    best = max(t.score for t in trials)
    if trials[0].negatives:
        return next(i for i, t in enumerate(trials) if t.score == best), (
            "largest margin: worst copy minus worst negative or random-weight model"
        )
    return next(i for i, t in enumerate(trials) if t.score >= best - TOLERANCE), (
        f"smallest k within {TOLERANCE:g} of the largest margin (worst copy minus worst random-weight model; "
        "no negatives)"
    )


def tune(
    extract: Callable[[Setting], Any],
    settings: Sequence[Setting],
    copies: Sequence[Tuple[str, Any]],
    negatives: Sequence[Tuple[str, Any]] = (),
    random: Sequence[Tuple[str, Any]] = (),
    *,
    progress: bool = True,
    max_extensions: int = MAX_EXTENSIONS,
) -> Tuning:
    """Try ``settings`` in order: ``extract(setting)`` gives its fingerprint; each (name, classifier) of ``copies``,
    ``negatives`` and ``random`` (random-weight models) is scored on it. While the best margin lies at the largest k
    and still rises with k, the grid is extended (:func:`_extension`, at most ``max_extensions`` times). The search
    stops early at a setting that separates perfectly (every copy 1.0, every other model 0.0)."""
    if not copies:
        raise ParameterError("tuning needs at least one copy of the target")
    trials: List[Trial] = []
    todo = list(settings)
    extensions = 0
    with progress_bar(len(todo), desc="tune", enabled=progress, unit="setting") as bar:
        while todo:
            s = todo.pop(0)
            fp = extract(s)
            trials.append(Trial(s, fp, _rates(fp, copies), _rates(fp, negatives), _rates(fp, random)))
            bar.update(1)
            log.info("%s: worst copy %.2f, margin %s", s, trials[-1].worst_copy, trials[-1].margin)
            if trials[-1].margin is not None and trials[-1].margin >= 1.0:
                break
            if not todo and extensions < max_extensions and len(trials) > 1:
                more = _extension(trials)
                if more:
                    extensions += 1
                    todo += more
                    if getattr(bar, "total", None) is not None:
                        bar.total += len(more)
    chosen, rule = choose(trials)
    skipped = [str(s) for s in todo]
    return Tuning(trials, chosen, rule, skipped)


def _extension(trials: Sequence[Trial]) -> List[Setting]:
    """The next k (:data:`EXTEND_FACTOR` times the largest tried, every label strategy tried) when the best margin
    lies at the largest k and is larger there than at the k before it; else nothing."""

    ks = sorted({t.setting.k for t in trials})
    if len(ks) < 2:
        return []
    best_at = {k: max(t.score for t in trials if t.setting.k == k) for k in ks}
    if max(best_at.values()) > best_at[ks[-1]] or best_at[ks[-1]] <= best_at[ks[-2]]:
        return []
    last = [t.setting for t in trials if t.setting.k == ks[-1]]
    k = _two_digits(ks[-1] * EXTEND_FACTOR)
    return [Setting(k, s.init, s.label, s.max_iter) for s in last]
