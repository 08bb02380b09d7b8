"""The suspect zoo: build (resumably), list, and load the target, its post-processed copies and the negatives.

A zoo is a folder with one file per model and ``manifest.json`` (schema ``ipguard_tf.zoo/1``) holding one record
per model: name, role (target / positive / negative), family, recipe or post-processing parameters, seed, test
accuracy, SHA-256 and size of the file, and for pruning the measured sparsity or pruned-filter fractions.

Resumable: each model is written atomically and its record added to the manifest (also written atomically)
right after, so a killed build restarts at the first model without a record, and never finds a half-written
model. A model file present without a record (killed between the two writes) is adopted: loaded, evaluated and
recorded. Pruning levels whose accuracy loss exceeded 3 % are recorded as ``rejected`` so that a resumed build
does not retrain them.

How a member is made is one table (:data:`MAKERS`, chosen by :func:`maker_of`), used both to build it and to
rebuild it from its record; a record holds exactly what its maker passes on: ``recipe`` (trained models),
``params`` (the keyword arguments of the post-processing or forest function), ``seed``, ``weights`` (ImageNet).
Manifests of schema ``ipguard_tf.zoo/1`` are upgraded on reading (:func:`upgrade_manifest`).

What a zoo holds is its plan (:meth:`ZooBuilder.planned`: :class:`PlannedMember` records in build order, each
naming the members it reads, e.g. the target); :meth:`ZooBuilder.build` makes them one after another in this
process, :meth:`ZooBuilder.pending` lists those still to make and :meth:`ZooBuilder.build_member` makes one, which
is what a parallel build (:mod:`ipguard_tf.zoo.parallel`, on Ray) runs in its workers.

Models larger than ``repo_limit_mb`` (VGG16, random forests) are marked ``in_repo: false`` and listed in the
folder's ``.gitignore``; :func:`load_member` rebuilds such a model on demand when its file is missing (training
is deterministic, so the rebuilt file has the recorded SHA-256 on the same machine and library versions;
a mismatch is logged).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ipguard_tf.core.constants import FP_STEP, MAX_ACCURACY_LOSS, WP_STEP
from ipguard_tf.io.data import load_dataset
from ipguard_tf.io.env_info import machine, utc_now, versions
from ipguard_tf.models.classifier import as_classifier, content_sha256
from ipguard_tf.models.imagenet import SUSPECTS, pixel_model
from ipguard_tf.models.tflite import DEFAULT_CALIBRATION_EXAMPLES
from ipguard_tf.zoo import postprocess as P
from ipguard_tf.zoo.forest import N_TREES, forest_accuracy, train_forest
from ipguard_tf.zoo.postprocess import quantize
from ipguard_tf.zoo.store import (
    MANIFEST,
    SCHEMA,
    ZooError,
    build_lock,
    file_sha256,
    load_member_file,
    read_manifest,
    save_member,
    write_manifest,
)
from ipguard_tf.zoo.train import VGG16_NEGATIVE, Recipe, evaluate_accuracy, get_recipe, train_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """How many models of each kind a zoo holds."""

    name: str
    same_arch: int
    lenet5: int
    vgg16: int
    forests: int
    max_wp: float = 0.9
    max_fp_sixteenths: int = 15
    #: CAE's defender ensemble (:meth:`ZooBuilder._cae_ensemble`): this many surrogates and as many references
    cae_members: int = 3


PROFILES: Dict[str, Profile] = {
    # what pretrained/fashion_mnist holds: every post-processing, 10 same-architecture negatives, 3 of each other
    # architecture, 10 random forests
    "quick": Profile("quick", same_arch=10, lenet5=3, vgg16=3, forests=10),
    # the paper's counts (Section 5.1.2): 50 same-architecture models, 10 LeNet-5, 10 VGG16, 10 random forests
    "paper": Profile("paper", same_arch=50, lenet5=10, vgg16=10, forests=10, cae_members=18),
    # for tests: a handful of everything
    "tiny": Profile("tiny", same_arch=2, lenet5=1, vgg16=0, forests=1, max_wp=0.2, max_fp_sixteenths=2, cae_members=0),
}

#: target architecture per dataset (paper Table 1; fmnist_cnn for Fashion-MNIST, see architectures.fmnist_cnn)
TARGETS = {"fashion_mnist": "fmnist_cnn", "cifar10": "resnet20", "cifar100": "wrn22_4", "imagenet": "imagenet:ResNet50"}


# -- how each member is made: one table for building and rebuilding ------------------------------------------------
def _trained(b: "ZooBuilder", rec: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """A model trained from scratch with the recorded recipe and seed (target and trained negatives)."""

    return train_model(b._data(), Recipe(**rec["recipe"]), rec["seed"], verbose=b.verbose), {}


def _student(b: "ZooBuilder", rec: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """CAE's surrogate of the target (Lukas et al., ICLR 2021): the recorded recipe trained from seed on the
    *target's* labels of the training set (the defender extracts its own model by retraining on its labels)."""
    from dataclasses import replace

    ds = b._data()
    labels = as_classifier(b._get("target")).predict_labels(ds.x_train, 512)
    return train_model(replace(ds, y_train=labels), Recipe(**rec["recipe"]), rec["seed"], verbose=b.verbose), {}


def _pretrained(b: Optional["ZooBuilder"], rec: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """ImageNet: a Keras Applications model with its pretrained weights (target and negatives)."""

    weights = rec.get("weights", b.weights if b is not None else None)
    return pixel_model(rec["architecture"].split(":", 1)[1], weights), {}


def _forest(b: "ZooBuilder", rec: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:

    return train_forest(b._data(), rec["seed"], **rec["params"]), {}


def _postprocessed(function: str, measure: Optional[Callable[[Any, Any], Tuple[Any, Dict[str, Any]]]] = None):
    """A post-processing of the target: ``postprocess.<function>(target, data, seed=..., **params)``;
    ``measure(postprocess, result)`` splits the result into the model and what to record about it."""

    def make(b: "ZooBuilder", rec: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
        out = getattr(P, function)(b._get("target"), b._data(), seed=rec["seed"], verbose=b.verbose, **rec["params"])
        return measure(P, out) if measure is not None else (out, {})

    return make


def _quantized(b: "ZooBuilder", rec: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """A TFLite copy of the target (issue 14: what a thief ships in a mobile app), int8 calibrated on the
    builder's calibration inputs (:meth:`ZooBuilder._calibration_x`)."""
    from types import SimpleNamespace

    p = rec["params"]
    data = SimpleNamespace(x_train=b._calibration_x())
    return quantize(
        b._get("target"), data, p["mode"], calibration_examples=p.get("calibration_examples"), name=rec.get("name")
    ), {}


#: family (or a record's ``maker``) -> maker(builder, record) -> (model, fields to record); see :func:`maker_of`
MAKERS: Dict[str, Callable[..., Tuple[Any, Dict[str, Any]]]] = {
    "trained": _trained,
    "student": _student,
    "pretrained": _pretrained,
    "random_forest": _forest,
    "FTLL": _postprocessed("fine_tune_last_layer"),
    "FTAL": _postprocessed("fine_tune_all_layers"),
    "RTLL": _postprocessed("retrain_last_layer"),
    "RTAL": _postprocessed("retrain_all_layers"),
    "WP": _postprocessed("weight_prune", lambda P, m: (m, {"measured_sparsity": P.measured_sparsity(m)})),
    "FP": _postprocessed("filter_prune", lambda P, out: (out[0], {"pruned_filter_fractions": out[1]})),
    "quantized": _quantized,
}


def maker_of(
    rec: Dict[str, Any], makers: Optional[Dict[str, Callable[..., Any]]] = None
) -> Callable[..., Tuple[Any, Dict[str, Any]]]:
    """The maker of a record among ``makers`` (default :data:`MAKERS`; a kind of zoo adds its own, see
    :attr:`ZooBuilder.makers`): the one it names (``maker``), ``trained`` for records with a recipe,
    ``pretrained`` for ImageNet models taken as published, else the one of its family."""
    makers = MAKERS if makers is None else makers
    if rec.get("maker") in makers:
        return makers[rec["maker"]]
    if "recipe" in rec:
        return makers["trained"]
    if str(rec.get("architecture", "")).startswith("imagenet:") and rec.get("role") != "positive":
        return makers["pretrained"]
    if rec["family"] not in makers:
        raise ZooError(f"cannot make a member of family {rec['family']!r}")
    return makers[rec["family"]]


def quantized_records(architecture: str) -> List[Tuple[str, Dict[str, Any]]]:
    """The TFLite copies of a target in a zoo: float16 weights, and full-integer int8 calibrated on
    :data:`~ipguard_tf.models.tflite.DEFAULT_CALIBRATION_EXAMPLES` inputs (TensorFlow's converter)."""

    return [
        (
            f"tflite_{mode}",
            {
                "role": "positive",
                "family": "quantized",
                "architecture": architecture,
                "seed": 0,
                "params": dict(
                    {"mode": mode}, **({"calibration_examples": DEFAULT_CALIBRATION_EXAMPLES} if mode == "int8" else {})
                ),
            },
        )
        for mode in ("float16", "int8")
    ]


def _post_params(**extra: Any) -> Dict[str, Any]:
    return dict(extra, batch_size=128)


@dataclass(frozen=True)
class PlannedMember:
    """One member of a zoo's plan (:meth:`ZooBuilder.planned`): what its maker reads (``info``, the record
    without what building it measures), its file suffix, and what must be made before it."""

    name: str
    info: Dict[str, Any]
    suffix: str = ".keras"
    #: members its maker (or its record: a SAC member's agreement) reads, so made before it
    needs: Tuple[str, ...] = ()
    #: pruning levels ("WP", "FP"): made in plan order, none after the first whose accuracy loss exceeds 3 %
    chain: Optional[str] = None
    #: members made from one shared run (SAC's fine-pruning snapshots): one task of a parallel build
    run: Optional[str] = None
    #: an ImageNet negative taken as published: recorded from its weights, no file
    pretrained: bool = False


# -- the builder ----------------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """``value`` as its manifest record holds it (tuples as lists, NumPy scalars as numbers), for comparing."""
    return json.loads(json.dumps(value, sort_keys=True, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


@dataclass
class ZooBuilder:
    """Builds the zoo of one dataset into ``out``; call :meth:`build`. See the module docstring."""

    dataset_name: str
    out: Path
    profile: Profile
    data_dir: Optional[str] = None
    verbose: int = 1
    repo_limit_mb: float = 5.0
    weights: Optional[str] = "imagenet"  # ImageNet only: pretrained weights of the target and the negatives
    dataset: Any = None
    manifest: Dict[str, Any] = field(default_factory=dict)
    #: the target once loaded (the post-processings are pure: every positive is made from this one copy)
    _target: Any = field(default=None, repr=False)
    #: a worker of a parallel build (:mod:`ipguard_tf.zoo.parallel`): makes and stores members, records them in
    #: its copy of the manifest only; the driver alone writes ``manifest.json``
    worker: bool = field(default=False, repr=False)
    #: rebuild members recorded with other parameters than the plan's (:meth:`stale`); else such a zoo is an error
    rebuild_stale: bool = False
    _plan: Optional[List[PlannedMember]] = field(default=None, repr=False)
    #: records dropped as stale (:meth:`start`): a rebuilt member keeps what its earlier record said of the repository
    _dropped: Dict[str, Dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.dataset_name not in TARGETS:
            raise ZooError(f"no zoo definition for dataset {self.dataset_name!r}")
        self.arch = TARGETS[self.dataset_name]

    # -- bookkeeping ------------------------------------------------------------------------------------------
    #: the manifest's ``kind`` (None: the IPGuard paper's zoo, whose manifests have no such field)
    kind = None
    #: how this kind of zoo makes each family (:func:`maker_of`)
    makers = MAKERS

    def _load_state(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in list(self.out.glob(".*.keras")) + list(self.out.glob(".*.tmp")):
            stale.unlink()  # a temporary file of a killed atomic write: never a finished model
        if (self.out / MANIFEST).exists():
            self.manifest = read_manifest(self.out)
            if self.manifest.get("dataset") != self.dataset_name:
                raise ZooError(f"{self.out} holds a {self.manifest.get('dataset')} zoo, not {self.dataset_name}")
            if self.manifest.get("kind") != self.kind:
                raise ZooError(
                    f"{self.out} holds another kind of zoo ({self.manifest.get('kind') or 'ipguard'}), "
                    f"not {self.kind or 'ipguard'}"
                )
        else:
            self.manifest = {
                "schema": SCHEMA,
                **({"kind": self.kind} if self.kind else {}),
                "dataset": self.dataset_name,
                "target_architecture": self.arch,
                "models": [],
                "rejected": [],
            }
        self.manifest["profile"] = self.profile.name
        kind = f" --kind {self.kind}" if self.kind else ""
        self.manifest["build_command"] = (
            f"ipguard zoo build{kind} --dataset {self.dataset_name} --profile {self.profile.name} --out {self.out}"
        )
        self.manifest.update(self._manifest_fields())
        self.manifest["versions"] = versions()
        self.manifest["machine"] = machine()

    def _manifest_fields(self) -> Dict[str, Any]:
        """Fields a kind of zoo adds to its manifest (checked against an existing one first); none here."""
        return {}

    def _write_manifest(self) -> None:
        """Write the manifest (atomically), unless this builder is a worker of a parallel build."""
        if not self.worker:
            write_manifest(self.out, self.manifest)

    def start(self) -> None:
        """Read (or start) the manifest before building: what :meth:`build` and a parallel build do first. Members
        recorded with other parameters than the plan's (:meth:`stale`) are a :class:`ZooError`, or, with
        ``rebuild_stale``, dropped (record and file) to be built again."""
        self._load_state()
        if self.dataset_name == "imagenet":  # the pretrained Keras ResNet50 (paper Section 5.1.1)
            self.manifest["weights"] = self.weights
        stale = self.stale()
        if stale and not self.rebuild_stale:
            name, why = next(iter(stale.items()))
            raise ZooError(
                f"zoo {self.out}: {len(stale)} members were made otherwise than profile {self.profile.name} plans "
                f"(first: {name}, {why}); rebuild them with --rebuild-stale, or build into another folder"
            )
        for name, why in stale.items():
            log.warning("zoo %s: rebuilding %s (%s)", self.out, name, why)
            rec = self.record(name)
            if rec is not None:
                self._dropped[name] = rec
                if rec.get("file"):
                    (self.out / rec["file"]).unlink(missing_ok=True)
            self.manifest["models"] = [r for r in self.manifest["models"] if r["name"] != name]
            self.manifest["rejected"] = [r for r in self.manifest.get("rejected", []) if r["name"] != name]

    def stale(self) -> Dict[str, str]:
        """Recorded (or rejected) members whose record differs from what the plan would make now, in a field of
        the plan's record (a recipe or augmentation changed since they were built), and the members that need one
        of them (an Extract-Adv student of a stale Extract-L student): ``{name: why}``, in plan order."""
        out: Dict[str, str] = {}
        for member in self.planned():
            rec, rejected = self.record(member.name), self._rejected(member.name)
            if rec is None and rejected is None:
                continue
            differ = [
                k
                for k, v in member.info.items()
                if (rejected is None or k in rejected) and _jsonable((rec or rejected).get(k)) != _jsonable(v)  # type: ignore[union-attr]
            ]
            if differ:
                out[member.name] = f"its {', '.join(differ)} differ from the plan's"
            elif any(n in out for n in member.needs):
                out[member.name] = f"made from {next(n for n in member.needs if n in out)}, which is rebuilt"
        return out

    def record(self, name: str) -> Optional[Dict[str, Any]]:
        return next((r for r in self.manifest["models"] if r["name"] == name), None)

    def _rejected(self, name: str) -> Optional[Dict[str, Any]]:
        return next((r for r in self.manifest.get("rejected", []) if r["name"] == name), None)

    def _data(self):
        if self.dataset is None:
            self.dataset = load_dataset(self.dataset_name, self.data_dir)
        return self.dataset

    def _calibration_x(self) -> np.ndarray:
        """Inputs an int8 TFLite copy is calibrated on: the training inputs (a thief's own data in the SAC zoo)."""
        return self._data().x_train

    def _accuracy(self, model) -> float:
        ds = self._data()
        if hasattr(model, "predict") and not hasattr(model, "layers"):
            return forest_accuracy(model, ds.x_test, ds.y_test)

        return evaluate_accuracy(model, ds.x_test, ds.y_test)

    def _store(self, name: str, model: Any, info: Dict[str, Any], suffix: str = ".keras") -> Dict[str, Any]:
        path = self.out / f"{name}{suffix}"
        save_member(model, path)
        acc = info.pop("test_accuracy", None)
        rec = {
            "name": name,
            **info,
            "test_accuracy": self._accuracy(model) if acc is None else acc,
            "file": path.name,
            "sha256": file_sha256(path),
            "content_sha256": content_sha256(model),
            "size_bytes": path.stat().st_size,
            "created": utc_now(),
        }
        earlier = self.record(name)
        # a member once left out of the repository (pretrained/ is kept under its size limit) stays out when rebuilt,
        # with this recipe or another (a stale one)
        kept = (earlier or self._dropped.get(name) or {}).get("in_repo", True)
        rec["in_repo"] = rec["size_bytes"] <= self.repo_limit_mb * 1e6 and kept
        for key in ("rebuild_seconds", "rebuild_machine"):  # measured when it was rebuilt (time_rebuilds.py)
            if earlier is not None and key in earlier:
                rec[key] = earlier[key]
        self.manifest["models"] = [r for r in self.manifest["models"] if r["name"] != name] + [rec]
        self._write_manifest()
        log.info(
            "zoo %s: %s (%s, acc %.4f, %.1f MB)",
            self.out,
            name,
            info.get("family"),
            rec["test_accuracy"],
            rec["size_bytes"] / 1e6,
        )
        return rec

    def _entry(self, name: str, info: Dict[str, Any], suffix: str = ".keras") -> None:
        """Make member ``name`` from its record ``info`` (with the maker :func:`maker_of` gives) and store it,
        unless it is recorded already; a file present without a record (a build killed between writing the
        model and its record) is adopted: loaded, evaluated and recorded."""
        rec = self.record(name)
        path = self.out / f"{name}{suffix}"
        if rec is not None and path.exists():
            return  # built already; loaded lazily by whoever needs it
        if rec is None and path.exists():
            log.info("adopting %s (file present, no record)", path)
            self._store(name, load_member_file(path), dict(info), suffix)
            return
        t0 = time.perf_counter()
        model, extra = maker_of(info, self.makers)(self, info)
        self._store(name, model, {**info, **extra, "build_seconds": round(time.perf_counter() - t0, 1)}, suffix)

    def load(self, name: str) -> Any:
        """Load recorded member ``name``; rebuild it if its file is missing (models not kept in the repository)."""
        rec = self.record(name)
        if rec is None:
            raise ZooError(f"{self.out}: no member {name!r}")
        if rec.get("file") is None:  # pretrained (ImageNet negatives): built from its weights
            return _pretrained(self, rec)[0]
        path = self.out / rec["file"]
        if not path.exists():
            log.info("%s missing: rebuilding it", path)
            return self.rebuild(name)
        model = load_member_file(path)
        self._check_member(rec, path, model)
        return model

    def _check_member(self, rec: Dict[str, Any], path: Path, model: Any) -> None:
        """A member file whose bytes and content both differ from its manifest record is a :class:`ZooError` (two
        builds that wrote one folder, or a file replaced by hand), except for a member the repository does not keep
        (``in_repo`` false): rebuilt on another machine it legitimately differs, which its rebuild warned of. A
        forest (``.skops``) only gets a warning: its content hash changes when it is saved and loaded, so a rebuilt
        forest cannot be told from a replaced one."""
        if rec.get("sha256") in (None, file_sha256(path)) or rec.get("in_repo") is False:
            return
        if rec.get("content_sha256") in (None, content_sha256(model)):
            return
        if path.suffix == ".skops":  # a forest's content hash is not stable across save and load: cannot tell
            log.warning("%s: the file differs from its manifest record (a rebuilt forest?)", path)
            return
        raise ZooError(
            f"{path}: the file does not match its manifest record (SHA-256 {str(rec.get('sha256'))[:12]}); another "
            "build wrote this zoo, or the file was replaced: delete the file to rebuild it, or rebuild the zoo"
        )

    def _get(self, name: str) -> Any:
        """Load a recorded member (rebuilding it when its file is missing); the target is loaded once."""
        if name != "target":
            return self.load(name)
        if self._target is None:
            self._target = self.load(name)
        return self._target

    # -- the zoo ----------------------------------------------------------------------------------------------
    def build(self, only_target: bool = False) -> Dict[str, Any]:
        """Build every missing member, in plan order, holding the folder's build lock; return the manifest."""
        with build_lock(self.out):
            return self._build(only_target)

    def _build(self, only_target: bool) -> Dict[str, Any]:
        self.start()
        stopped = set()
        for member in self.planned():
            if member.chain in stopped:
                continue
            if not self.build_member(member):
                stopped.add(member.chain)
            if only_target:
                return self.manifest
        self.manifest["complete"] = True
        self._write_manifest()
        return self.manifest

    def planned(self) -> List[PlannedMember]:
        """Every member this zoo may hold, in build order (pruning levels after the first rejected one are not
        made); each with the members it needs (:meth:`needs`)."""
        if self._plan is None:
            self._plan = [replace(m, needs=self.needs(m)) for m in self._plan_members()]
        return self._plan

    def needs(self, member: PlannedMember) -> Tuple[str, ...]:
        """The members ``member``'s maker reads: the target, for everything made from it (post-processed copies,
        CAE's students); nothing for models trained or taken from scratch."""
        if member.name == "target" or member.pretrained:
            return ()
        return () if maker_of(member.info, self.makers) in (_trained, _forest, _pretrained) else ("target",)

    def pending(self) -> List[PlannedMember]:
        """The planned members still to make, in build order: those not recorded with their file, less the
        rejected ones and the pruning levels after a rejected one."""
        out, stopped = [], set()
        for member in self.planned():
            if member.chain in stopped:
                continue
            if self._rejected(member.name):  # a pruning level past the accuracy cap, a SAC copy under its floor
                if member.chain is not None:
                    stopped.add(member.chain)
                continue
            rec = self.record(member.name)
            if rec is not None and (member.pretrained or (self.out / f"{member.name}{member.suffix}").exists()):
                continue
            out.append(member)
        return out

    def build_member(self, member: Any) -> bool:
        """Make planned ``member`` (a :class:`PlannedMember` or its name) unless it is recorded, and store it;
        False when it is a pruning level whose accuracy loss exceeds 3 % (now or in an earlier run)."""
        if isinstance(member, str):
            found = [m for m in self.planned() if m.name == member]
            if not found:
                raise ZooError(f"{self.out}: no member {member!r} in the plan of this zoo")
            member = found[0]
        if member.pretrained:
            self._pretrained_negative(member)
            return True
        if member.chain is not None:
            return self._level(member.name, member.info, self.record("target")["test_accuracy"])
        self._entry(member.name, member.info, member.suffix)
        return True

    def _plan_members(self) -> List[PlannedMember]:
        """The IPGuard paper's zoo: the target, its post-processed copies, then the negatives and CAE's ensemble."""
        if self.dataset_name == "imagenet":  # the pretrained Keras ResNet50 (paper Section 5.1.1)
            target = {"role": "target", "family": "target", "architecture": self.arch, "weights": self.weights}
        else:
            target = {
                "role": "target",
                "family": "target",
                "architecture": self.arch,
                "recipe": get_recipe(self.dataset_name, self.arch).as_dict(),
            }
        return [PlannedMember("target", {**target, "seed": 0})] + self._positives() + self._negatives()

    def _positives(self) -> List[PlannedMember]:

        out = [
            PlannedMember(
                name, {"role": "positive", "family": family, "architecture": self.arch, "params": params, "seed": 0}
            )
            for name, family, params in (
                ("ftll", "FTLL", _post_params(epochs=P.FT_EPOCHS, learning_rate=P.FT_LR_LAST)),
                ("ftal", "FTAL", _post_params(epochs=P.FT_EPOCHS, learning_rate=P.FT_LR_ALL)),
                ("rtll", "RTLL", _post_params(epochs=P.RTLL_EPOCHS, learning_rate=P.FT_LR_LAST)),
                ("rtal", "RTAL", _post_params(epochs=P.FT_EPOCHS, learning_rate=P.FT_LR_LAST)),
            )
        ]

        def level(name: str, chain: str, fields: Dict[str, Any]) -> PlannedMember:
            return PlannedMember(
                name, {"role": "positive", "architecture": self.arch, "seed": 0, "family": chain, **fields}, chain=chain
            )

        retrain = dict(epochs=P.PRUNE_RETRAIN_EPOCHS, learning_rate=P.PRUNE_RETRAIN_LR)
        # WP: p = 0.1, 0.2, ... until the accuracy loss exceeds 3 %
        for i in range(1, int(round(self.profile.max_wp / WP_STEP)) + 1):
            p = round(i * WP_STEP, 10)
            out.append(
                level(
                    f"wp_p{p:.1f}",
                    "WP",
                    {
                        "sparsity": p,
                        "tool": "tfmot prune_low_magnitude",
                        "params": _post_params(sparsity=p, architecture=self.arch, **retrain),
                    },
                )
            )
        for j in range(1, self.profile.max_fp_sixteenths + 1):
            out.append(
                level(
                    f"fp_c{j:02d}of16",
                    "FP",
                    {"fraction": j * FP_STEP, "sixteenths": j, "params": _post_params(fraction=j * FP_STEP, **retrain)},
                )
            )
        if self.dataset_name != "imagenet":  # Keras Applications models are taken as published, not converted
            out += [PlannedMember(name, rec, ".tflite") for name, rec in quantized_records(self.arch)]
        return out

    #: what a rejected pruning level's record keeps of its planned record (besides name, accuracy, reason)
    _LEVEL_ONLY = ("role", "architecture", "seed", "params", "tool")

    def _level(self, name: str, info: Dict[str, Any], target_acc: float) -> bool:
        """Build one pruning level; False when it (or an earlier run) found the accuracy loss above 3 %."""
        if self._rejected(name):
            return False
        rec = self.record(name)
        if rec is not None and (self.out / rec["file"]).exists():
            return True
        model, extra = maker_of(info, self.makers)(self, info)
        acc = self._accuracy(model)
        if target_acc - acc > MAX_ACCURACY_LOSS:
            self.manifest.setdefault("rejected", []).append(
                {
                    "name": name,
                    **{k: v for k, v in info.items() if k not in self._LEVEL_ONLY},
                    "test_accuracy": acc,
                    "reason": f"accuracy loss {target_acc - acc:.4f} > {MAX_ACCURACY_LOSS}",
                }
            )
            self._write_manifest()
            log.info("zoo: %s rejected (accuracy %.4f, target %.4f)", name, acc, target_acc)
            return False
        self._store(name, model, {**info, **extra, "test_accuracy": acc})
        return True

    def _pretrained_negative(self, member: PlannedMember) -> None:
        """ImageNet: the best pretrained Keras model of another family (paper Section 5.1.2); not stored, built
        from the weights when loaded."""

        if self.record(member.name) is not None:
            return
        info = member.info
        acc = self._accuracy(pixel_model(info["family"], self.weights))
        rec = {
            "name": member.name,
            **info,
            "test_accuracy": acc,
            "file": None,
            "sha256": None,
            "size_bytes": 0,
            "in_repo": False,
            "created": utc_now(),
        }
        self.manifest["models"].append(rec)
        self._write_manifest()
        log.info("zoo %s: %s (pretrained, acc %.4f)", self.out, member.name, acc)

    def _negatives(self) -> List[PlannedMember]:

        if self.dataset_name == "imagenet":
            return [
                PlannedMember(
                    f"pretrained_{name}",
                    {
                        "role": "negative",
                        "family": name,
                        "architecture": f"imagenet:{name}",
                        "weights": self.weights,
                        "seed": None,
                    },
                    pretrained=True,
                )
                for name in SUSPECTS
            ]

        def trained(family: str, arch: str, count: int) -> List[PlannedMember]:
            recipe = get_recipe(self.dataset_name, arch).as_dict()
            return [
                PlannedMember(
                    f"{family}_seed{s:02d}",
                    {"role": "negative", "family": family, "architecture": arch, "recipe": recipe, "seed": s},
                )
                for s in range(1, count + 1)
            ]

        out = trained("same_arch", self.arch, self.profile.same_arch) + trained("lenet5", "lenet5", self.profile.lenet5)
        out += [
            PlannedMember(
                f"rf_seed{s:02d}",
                {
                    "role": "negative",
                    "family": "random_forest",
                    "architecture": "rf",
                    "features": "flattened pixels",
                    "params": {"n_estimators": N_TREES},
                    "seed": s,
                },
                ".skops",
            )
            for s in range(1, self.profile.forests + 1)
        ]
        out += trained("vgg16", VGG16_NEGATIVE.get(self.dataset_name, "vgg16"), self.profile.vgg16)  # slowest last
        return out + self._cae_ensemble()

    def _cae_ensemble(self) -> List[PlannedMember]:
        """CAE's defender ensemble (roles ``surrogate`` and ``reference``, not suspects): surrogates are the
        target's architecture and recipe trained on the target's labels (:func:`_student`), references the same
        trained on the true labels, with seeds no negative uses (301, ...; surrogates 201, ...). The defender's
        data is the target's own training set, as in Lukas et al. (RorschachChen's ``prepare_models``: the same
        CIFAR-10 training set for source, surrogates and references)."""

        recipe = get_recipe(self.dataset_name, self.arch).as_dict()
        out = []
        for s in range(1, self.profile.cae_members + 1):
            out.append(
                PlannedMember(
                    f"cae_surrogate_seed{s:02d}",
                    {
                        "role": "surrogate",
                        "family": "cae_surrogate",
                        "maker": "student",
                        "architecture": self.arch,
                        "recipe": recipe,
                        "seed": 200 + s,
                    },
                )
            )
            out.append(
                PlannedMember(
                    f"cae_reference_seed{s:02d}",
                    {
                        "role": "reference",
                        "family": "cae_reference",
                        "maker": "trained",
                        "architecture": self.arch,
                        "recipe": recipe,
                        "seed": 300 + s,
                    },
                )
            )
        return out

    def rebuild(self, name: str) -> Any:
        """Rebuild one recorded member whose file is missing, with the maker and the parameters its record
        holds (deterministic training: the content SHA-256 is compared with the recorded one)."""
        rec = self.record(name)
        if rec is None:
            raise ZooError(f"{self.out}: no member {name!r}")
        model, _ = maker_of(rec, self.makers)(self, rec)
        if rec.get("file") is None:
            return model
        save_member(model, self.out / rec["file"])
        if content_sha256(model) != rec.get("content_sha256"):
            log.warning(
                "rebuilt %s differs from the recorded model (content SHA-256); another machine or other "
                "library versions?",
                name,
            )
        return model
