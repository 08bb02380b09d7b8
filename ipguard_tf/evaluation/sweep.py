"""Evaluating fingerprinting methods over a suspect zoo (paper Section 5.1.5): matching rates of every positive and
negative suspect, robustness/uniqueness, ARUC, AUC, gap; with a cache so long sweeps resume.

Each (method, strategy, setting, seed) is one fingerprint. Its file and the suspects' matching rates are cached
in the sweep folder (``fp/<key>.npz`` and ``rates/<key>.json``, written atomically), so a killed sweep resumes and
a suspect added to the zoo later only costs its verification.

Cached rates are keyed by a SHA-256 of the points they were measured on and reused only for bit-identical
points. Points are bit-identical only on the same platform (:func:`ipguard_tf.io.env_info.platform_key`: CPU model,
instruction sets, caches, cores, library versions); on another CPU the regenerated fingerprints differ and every
suspect is verified again (README, "Reproducibility": IPGuard rates then differ by at most 0.06, as measured).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from ipguard_tf.core import metrics, registry
from ipguard_tf.core.fingerprint import Fingerprint
from ipguard_tf.core.statistics import Statistic, statistic_of
from ipguard_tf.io.files import atomic_write_bytes
from ipguard_tf.io.fingerprint_file import load_fingerprint, save_fingerprint
from ipguard_tf.models.classifier import Classifier, as_classifier, content_sha256
from ipguard_tf.verification.suspects import verify
from ipguard_tf.zoo.members import load_member, method_inputs
from ipguard_tf.zoo.store import ZooError, members, read_manifest

log = logging.getLogger(__name__)


@dataclass
class Suspect:
    """One suspect of a zoo, adapted as a classifier."""

    name: str
    role: str  # positive | negative
    family: str
    label: str  # e.g. "WP p=0.3", "FP c=2/16", "same_arch"
    classifier: Classifier
    #: the member's zoo record (pruned fraction, queries, ...)
    record: Dict[str, Any] = field(default_factory=dict)

    @property
    def other_labels(self) -> bool:
        """It labels another label set (the SAC zoo's transfer models): only statistics on class scores, not
        matching rates, compare it with the fingerprint."""
        return bool(self.record.get("labels"))


def suspect_label(rec: Dict[str, Any]) -> str:
    if rec["family"] == "WP":
        return f"WP p={rec['sparsity']:.1f}"
    if rec["family"] == "FP":
        return f"FP c={rec['sixteenths']}/16"
    if rec.get("data"):  # a SAC zoo member (several per family: extract_l of three architectures): its name
        return rec["name"]
    return rec["family"]


#: the zoo roles that are suspects: not the target, nor a fingerprinting method's own models (CAE's surrogates
#: and references, roles ``surrogate`` / ``reference``)
SUSPECT_ROLES = ("positive", "negative")


def check_accuracy_floor(folder: Path) -> None:
    """Refuse a zoo that counts a stolen model under its accuracy floor (the SAC zoo's ``accuracy_floor``,
    :data:`~ipguard_tf.core.constants.STOLEN_MAX_ACCURACY_DROP` below its source) as a positive: a copy that does
    not do its job is no evidence of what a fingerprint detects (issue 31). Zoos without a floor pass."""
    manifest = read_manifest(folder)
    floor = (manifest.get("accuracy_floor") or {}).get("floor")
    if floor is None:
        return
    below = [r for r in manifest["models"] if r["role"] == "positive" and r["test_accuracy"] < floor]
    if below:
        listed = ", ".join(f"{r['name']} ({r['test_accuracy']:.4f})" for r in below)
        raise ZooError(
            f"{folder}: {len(below)} stolen model(s) under the zoo's accuracy floor {floor:.4f} counted as "
            f"positives: {listed}; rebuild the zoo (ipguard zoo build) so that they are rejected"
        )


def load_zoo_suspects(
    folder: Any, data_dir: Optional[str] = None, names: Optional[Iterable[str]] = None, other_label_sets: bool = False
) -> List[Suspect]:
    """Every positive and negative member of a zoo (not the target nor CAE's ensemble; members labelling another
    label set, such as the SAC zoo's transfer models, only with ``other_label_sets``), loaded once and adapted."""

    wanted = set(names) if names is not None else None
    check_accuracy_floor(Path(folder))
    out = []
    for rec in members(Path(folder)):
        if (
            rec["role"] not in SUSPECT_ROLES
            or (rec.get("labels") and not other_label_sets)
            or (wanted is not None and rec["name"] not in wanted)
        ):
            continue
        model = load_member(Path(folder), rec["name"], data_dir=data_dir)
        out.append(
            Suspect(
                rec["name"],
                rec["role"],
                rec["family"],
                suspect_label(rec),
                as_classifier(model, name=rec["name"]),
                dict(rec),
            )
        )
    return out


def statistics(fp: Fingerprint, suspects: List[Suspect]) -> Dict[str, float]:
    """Each suspect's value of the fingerprint's statistic (:func:`~ipguard_tf.core.statistics.statistic_of`):
    the matching rate, or SAC's distance. Suspects of another label set (:attr:`Suspect.other_labels`) are left
    out of a statistic that compares labels; SAC's distance compares them (its correlations need no common
    label set)."""
    stat = statistic_of(fp)
    return {s.name: verify(fp, s.classifier, name=s.name).value for s in comparable_suspects(stat, suspects)}


def comparable_suspects(stat: Statistic, suspects: List[Suspect]) -> List[Suspect]:
    """The suspects a statistic can compare with a fingerprint: all of them for a statistic on class scores
    (SAC's distance), those of the fingerprint's label set for a matching rate."""
    return [s for s in suspects if not (stat.same_label_set and s.other_labels)]


def summarize(
    rates: Dict[str, float], roles: Dict[str, str], higher_is_copy: bool = True, exclude: Iterable[str] = ()
) -> Dict[str, Any]:
    """ARUC (Eq. 7, r = 100), AUC, gap, and the thresholds with robustness = uniqueness = 1, on a statistic
    whose direction is ``higher_is_copy``; suspects in ``exclude`` (another label set) do not count."""
    return metrics.summary(*metrics.by_role(rates, roles, exclude), higher_is_copy=higher_is_copy)


def points_sha256(fp: Fingerprint) -> str:
    """SHA-256 of a fingerprint's points and labels (what a matching rate depends on; not the metadata)."""
    h = hashlib.sha256()
    for a in (fp.x, fp.y) + ((fp.outputs,) if fp.outputs is not None else ()):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _model_sha256(model: Any) -> str:
    """What a model computes with, for :meth:`Sweep.inputs_sha256`: a classifier's recorded weights SHA-256, else
    the content SHA-256 of the model (or of the Keras model a classifier wraps)."""
    sha = getattr(model, "weights_sha256", None)
    if isinstance(sha, str):
        return sha
    inner = getattr(model, "keras_model", None)
    sha = content_sha256(inner if inner is not None else model)
    # a model with nothing to hash (a label function) is known by its source only
    return sha or f"source:{getattr(model, 'source', '') or getattr(model, 'name', '')}"


def has_strategies(method: str) -> bool:
    """The method has the paper's initialisation/label strategies (-TR/-TL/-RR/-RL; SAC's methods do not)."""
    names = {p.name for p in registry.get(method).params}
    return {"init", "label"} <= names


def strategies_for(method: str, configured: Iterable[str]) -> List[str]:
    """The strategies a sweep runs for ``method``: its registry's ``sweep_strategies`` (Random: RR and TR; SAC's
    methods: ``-``), else the configured ones."""
    fixed = registry.get(method).sweep_strategies
    return list(fixed) if fixed is not None else list(configured)


def run_key(method: str, strategy: str, setting: Optional[float], seed: int) -> str:
    s = "none" if setting is None else f"{setting:g}"
    return f"{method}_{strategy}_{s}_seed{seed}"


class Sweep:
    """Fingerprints and matching rates for many (method, strategy, setting, seed), cached in ``folder``."""

    def __init__(
        self,
        folder: Path,
        target: Any,
        train_x: np.ndarray,
        suspects: List[Suspect],
        *,
        n: int = 100,
        dataset: str = "",
        method_params: Optional[Dict[str, Dict[str, Any]]] = None,
        progress: bool = True,
        train_y: Optional[np.ndarray] = None,
        method_data: Optional[Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]] = None,
    ) -> None:
        self.folder = Path(folder)
        #: per method, the (inputs, labels) it draws its samples from instead of ``train_x`` (SAC-m: held-out images,
        #: as the official code mixes test images)
        self.method_data = dict(method_data or {})
        self.target = as_classifier(target)
        self.train_x = train_x
        #: labels of ``train_x`` (SAC-w picks the examples the target misclassifies)
        self.train_y = train_y
        self.suspects = suspects
        self.roles = {s.name: s.role for s in suspects}
        self.n = n
        self.dataset = dataset
        self.method_params = method_params or {}
        self.progress = progress
        #: per run key timed again: were the regenerated points bit-identical to the cached ones?
        self.reproducible: Dict[str, Optional[bool]] = {}
        #: per method, what it needs from a zoo (CAE's ensemble), loaded once
        self._inputs: Dict[str, Dict[str, Any]] = {}
        #: per method, :meth:`inputs_sha256` (the target, data and ensemble do not change during a sweep)
        self._inputs_sha256: Dict[str, str] = {}

    def is_cached(self, method: str, strategy: str, setting: Optional[float], seed: int) -> bool:
        return (self.folder / "fp" / f"{run_key(method, strategy, setting, seed)}.npz").exists()

    def fingerprint(self, method: str, strategy: str, setting: Optional[float], seed: int) -> Fingerprint:
        """One sweep point's fingerprint, cached in ``fp/`` with :meth:`inputs_sha256`: a cached one made from
        another target, other data or another CAE ensemble (a zoo rebuilt since; a cache older than the check) is
        made again."""
        key = run_key(method, strategy, setting, seed)
        path = self.folder / "fp" / f"{key}.npz"
        m = self.method(method, strategy, setting, seed, progress=self.progress)
        inputs = self.inputs_sha256(method)
        if path.exists():
            cached = load_fingerprint(path)
            if cached.metadata.get("inputs_sha256") == inputs:
                return cached
            log.warning("%s: the cached fingerprint was made from another target, data or ensemble: made again", key)
        ckpt = path.with_name(path.name + ".checkpoint.npz")  # a killed sweep resumes inside this run too
        x, y = self.data_for(method)
        fp = m.generate(self.target, self.n, x, train_y=y, dataset=self.dataset, checkpoint=ckpt)
        fp.metadata["inputs_sha256"] = inputs
        save_fingerprint(fp, path)
        ckpt.unlink(missing_ok=True)
        return fp

    def inputs_sha256(self, method: str) -> str:
        """SHA-256 of what ``method``'s fingerprints are made from besides its parameters (which the run key names):
        the target's weights, the inputs and labels it draws from (:meth:`data_for`) and its zoo inputs (CAE's
        surrogates and references, by name and content); computed once per method."""
        known = self._inputs_sha256.get(method)
        if known is not None:
            return known
        h = hashlib.sha256(_model_sha256(self.target).encode())
        for a in self.data_for(method):
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
        for name, value in sorted(self._inputs.get(method, {}).items()):
            models = value if isinstance(value, dict) else {"": value}
            for member, model in sorted(models.items()):
                sha = model if isinstance(model, (str, type(None))) else _model_sha256(model)
                h.update(f"{name}/{member}={sha};".encode())
        self._inputs_sha256[method] = h.hexdigest()
        return self._inputs_sha256[method]

    def data_for(self, method: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """The (inputs, labels) ``method`` draws from: its own (:attr:`method_data`), else the owner's training data."""
        return self.method_data.get(method, (self.train_x, self.train_y))

    def method(self, method: str, strategy: str, setting: Optional[float], seed: int, progress: bool = False):
        """The method of one sweep point: the config's parameters for it, the strategy (for methods that have the
        paper's -TR/-TL/-RR/-RL strategies; others take ``-``), the seed and the setting as its swept
        hyperparameter (the registry says which one that is)."""
        spec = registry.get(method)
        params = dict(self.method_params.get(method, {}))
        if spec.setting:
            params[spec.setting] = setting
        if has_strategies(method):
            params.update(init=strategy[0], label=strategy[1])
        if method not in self._inputs:
            self._inputs[method] = method_inputs(method, params)
        return registry.build(method, seed=seed, progress=progress, **params, **self._inputs[method])

    def run(self, method: str, strategy: str, setting: Optional[float], seed: int = 0) -> Dict[str, Any]:
        """One sweep point: the fingerprint (cached), every suspect's matching rate (cached), the summary."""
        key = run_key(method, strategy, setting, seed)
        rpath = self.folder / "rates" / f"{key}.json"
        cached = json.loads(rpath.read_text()) if rpath.exists() else {"rates": {}}
        fp = self.fingerprint(method, strategy, setting, seed)
        # cached rates count only for the fingerprint they were measured on (a fresh clone regenerates the
        # fingerprints; should one come out different, its suspects are verified again)
        digest = points_sha256(fp)
        if cached.get("points_sha256") not in (None, digest):
            log.warning("%s: cached matching rates belong to other fingerprint points; verifying again", key)
            cached = {"rates": {}}
        backfill = cached.get("points_sha256") is None and bool(cached["rates"])
        cached["points_sha256"] = digest
        # ... and for the suspect they were measured on: a member rebuilt with another recipe keeps its name
        # (issue 16's VGG16 negatives), so rates are keyed by its content SHA-256 too; rates cached before the
        # SHA-256s were recorded are measured again once
        known = cached.setdefault("suspect_sha256", {})
        for s in self.suspects:
            sha = s.record.get("content_sha256")
            if known.get(s.name) != sha:
                for k in ("rates", "rates_converged"):
                    cached.get(k, {}).pop(s.name, None)
                known[s.name] = sha
        stat = statistic_of(fp)
        usable = comparable_suspects(stat, self.suspects)
        # the converged points only as well (issue 16), where some did not converge
        conv_fp = fp.converged_only() if 0 < fp.n_converged < len(fp) else None
        cached.setdefault("rates_converged", {})
        missing = [s for s in usable if s.name not in cached["rates"]]
        missing_conv = [s for s in usable if conv_fp is not None and s.name not in cached["rates_converged"]]
        if backfill and not missing and not missing_conv:
            atomic_write_bytes(rpath, json.dumps(cached, indent=1, sort_keys=True).encode())
        if missing or missing_conv:
            t0 = time.perf_counter()
            cached["rates"].update(statistics(fp, missing))
            if missing_conv:
                cached["rates_converged"].update(statistics(conv_fp, missing_conv))
            log.debug("%s: verified %d suspects in %.1f s", key, len(missing), time.perf_counter() - t0)
            atomic_write_bytes(rpath, json.dumps(cached, indent=1, sort_keys=True).encode())
        rates = {s.name: cached["rates"][s.name] for s in usable}
        # every point converged: the converged-only rates are the rates; none did: there are none
        rates_conv = (
            rates
            if fp.n_converged == len(fp)
            else ({s.name: cached["rates_converged"][s.name] for s in usable} if conv_fp is not None else None)
        )
        conv = fp.converged
        out = {
            "key": key,
            "method": method,
            "strategy": strategy,
            "setting": setting,
            "seed": seed,
            "statistic": stat.name,
            "higher_is_copy": stat.higher_is_copy,
            "n": len(fp),
            "n_converged": int(conv.sum()),
            "seconds": fp.metadata.get("seconds"),
            "mean_distortion_converged": float(fp.distortion[conv].mean()) if conv.any() else None,
            "median_iterations": float(np.median(fp.iterations)),
            "rates": rates,
        }
        other = [s.name for s in usable if s.other_labels]
        out.update(summarize(rates, self.roles, stat.higher_is_copy, other))
        out["rates_converged"] = rates_conv
        if rates_conv is not None:
            summary_conv = summarize(rates_conv, self.roles, stat.higher_is_copy, other)
            out.update({f"{k}_converged": summary_conv[k] for k in ("aruc", "auc", "gap", "perfect_thresholds")})
        else:
            out.update({f"{k}_converged": None for k in ("aruc", "auc", "gap", "perfect_thresholds")})
        return out

    def time_best(self, best: Dict[str, Dict[str, Any]]) -> Dict[str, float]:
        """Generate each given run's fingerprint again (uncached), sequentially; return seconds per run key."""
        out = {}
        for method, r in best.items():
            m = self.method(method, r["strategy"], r["setting"], r["seed"])
            t0 = time.perf_counter()
            x, y = self.data_for(method)
            fp = m.generate(self.target, self.n, x, train_y=y)
            out[r["key"]] = time.perf_counter() - t0
            cached = self.folder / "fp" / f"{r['key']}.npz"
            same = points_sha256(fp) == points_sha256(load_fingerprint(cached)) if cached.exists() else None
            self.reproducible[r["key"]] = same
            log.info("timing pass: %s %.1f s (points identical to the sweep's: %s)", r["key"], out[r["key"]], same)
        return out
