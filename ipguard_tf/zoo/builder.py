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

Models larger than ``repo_limit_mb`` (VGG16, random forests) are marked ``in_repo: false`` and listed in the
folder's ``.gitignore``; :func:`load_member` rebuilds such a model on demand when its file is missing (training
is deterministic, so the rebuilt file has the recorded SHA-256 on the same machine and library versions;
a mismatch is logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..constants import FP_STEP, MAX_ACCURACY_LOSS, WP_STEP
from ..env_info import machine, utc_now, versions
from ..errors import IPGuardError
from ..io_utils import atomic_write_bytes

log = logging.getLogger(__name__)

SCHEMA = "ipguard_tf.zoo/2"
OLD_SCHEMAS = ("ipguard_tf.zoo/1",)
MANIFEST = "manifest.json"


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
    "tiny": Profile("tiny", same_arch=2, lenet5=1, vgg16=0, forests=1, max_wp=0.2, max_fp_sixteenths=2,
                    cae_members=0),
}

#: target architecture per dataset (paper Table 1; fmnist_cnn for Fashion-MNIST, see architectures.fmnist_cnn)
TARGETS = {"fashion_mnist": "fmnist_cnn", "cifar10": "resnet20", "cifar100": "wrn22_4",
           "imagenet": "imagenet:ResNet50"}


class ZooError(IPGuardError):
    pass


# -- manifest -------------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_sha256(model: Any) -> str:
    """SHA-256 of what a model computes with, independent of the file container (whose zip entries carry
    timestamps): the weight arrays of a Keras model, the node and value arrays of a forest's trees, or a TFLite
    model's flatbuffer."""
    if hasattr(model, "content_sha256"):  # TFLite
        return model.content_sha256
    if hasattr(model, "estimators_"):
        h = hashlib.sha256()
        for est in model.estimators_:
            st = est.tree_.__getstate__()
            for key in ("nodes", "values"):
                a = np.ascontiguousarray(st[key])
                h.update(a.tobytes())
        return h.hexdigest()
    from ..models import weights_sha256

    return weights_sha256(model)


def upgrade_manifest(manifest: Dict[str, Any]) -> Dict[str, Any]:
    """A manifest of an older schema in the current one (in place; returned). ``zoo/1`` -> ``zoo/2``: every
    record's ``params`` become exactly the keyword arguments its maker passes (the post-processings' batch size
    128, which was their default, made explicit; WP's architecture added; WP's ``tool`` and the forests'
    ``features`` moved out of ``params`` into the record)."""
    if manifest.get("schema") == "ipguard_tf.zoo/1":
        for rec in manifest.get("models", []):
            params = rec.get("params")
            if params is None:
                continue
            if rec["family"] in ("FTLL", "FTAL", "RTLL", "RTAL", "WP", "FP"):
                params.setdefault("batch_size", 128)
            if rec["family"] == "WP":
                rec["tool"] = params.pop("tool", "tfmot prune_low_magnitude")
                params.setdefault("architecture", rec["architecture"])
            if rec["family"] == "random_forest":
                rec["features"] = params.pop("features", "flattened pixels")
        manifest["schema"] = SCHEMA
    return manifest


def read_manifest(folder: Path) -> Dict[str, Any]:
    p = Path(folder) / MANIFEST
    if not p.exists():
        raise ZooError(f"{folder} is not a zoo (no {MANIFEST})")
    try:
        m = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ZooError(f"{p}: unreadable manifest ({exc})") from None
    if not isinstance(m, dict) or m.get("schema") not in (SCHEMA,) + OLD_SCHEMAS:
        raise ZooError(f"{p}: schema {m.get('schema') if isinstance(m, dict) else None!r} is not {SCHEMA!r}")
    return upgrade_manifest(m)


def is_zoo(path: Any) -> bool:
    p = Path(path)
    if not (p.is_dir() and (p / MANIFEST).exists()):
        return False
    try:
        return json.loads((p / MANIFEST).read_text()).get("schema") in (SCHEMA,) + OLD_SCHEMAS
    except Exception:
        return False


def _write_manifest(folder: Path, manifest: Dict[str, Any]) -> None:
    manifest["updated"] = utc_now()
    atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())
    big = sorted(r["file"] for r in manifest["models"] if r.get("file") and not r.get("in_repo", True))
    gi = "# models too large for the repository: rebuilt on demand by `ipguard zoo build`\n" + "".join(
        f"{f}\n" for f in big)
    atomic_write_bytes(folder / ".gitignore", gi.encode())


# -- saving / loading members ---------------------------------------------------------------------------------------
def save_member(model: Any, path: Path) -> None:
    """Write a Keras 3 model (.keras, without optimizer state), a forest (.skops) or a TFLite model (.tflite)
    atomically."""
    if path.suffix == ".tflite":
        atomic_write_bytes(path, model.content)
    elif path.suffix == ".skops":
        from .forest import save_forest

        save_forest(model, path)
    else:
        from ..models import save_keras_atomic

        save_keras_atomic(model, path)


def load_member_file(path: Path) -> Any:
    if path.suffix == ".tflite":
        from ..tflite import TFLiteModel

        return TFLiteModel(path)
    if path.suffix == ".skops":
        from .forest import load_forest

        return load_forest(path)
    import keras

    return keras.saving.load_model(str(path), compile=False)


# -- how each member is made: one table for building and rebuilding ------------------------------------------------
def _trained(b: "ZooBuilder", rec: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """A model trained from scratch with the recorded recipe and seed (target and trained negatives)."""
    from .train import Recipe, train_model

    return train_model(b._data(), Recipe(**rec["recipe"]), rec["seed"], verbose=b.verbose), {}


def _student(b: "ZooBuilder", rec: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """CAE's surrogate of the target (Lukas et al., ICLR 2021): the recorded recipe trained from seed on the
    *target's* labels of the training set (the defender extracts its own model by retraining on its labels)."""
    from dataclasses import replace

    from ..models import as_classifier
    from .train import Recipe, train_model

    ds = b._data()
    labels = as_classifier(b._get("target")).predict_labels(ds.x_train, 512)
    return train_model(replace(ds, y_train=labels), Recipe(**rec["recipe"]), rec["seed"], verbose=b.verbose), {}


def _pretrained(b: Optional["ZooBuilder"], rec: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """ImageNet: a Keras Applications model with its pretrained weights (target and negatives)."""
    from ..imagenet import pixel_model

    weights = rec.get("weights", b.weights if b is not None else None)
    return pixel_model(rec["architecture"].split(":", 1)[1], weights), {}


def _forest(b: "ZooBuilder", rec: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    from .forest import train_forest

    return train_forest(b._data(), rec["seed"], **rec["params"]), {}


def _postprocessed(function: str, measure: Optional[Callable[[Any, Any], Tuple[Any, Dict[str, Any]]]] = None):
    """A post-processing of the target: ``postprocess.<function>(target, data, seed=..., **params)``;
    ``measure(postprocess, result)`` splits the result into the model and what to record about it."""

    def make(b: "ZooBuilder", rec: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
        from . import postprocess as P

        out = getattr(P, function)(b._get("target"), b._data(), seed=rec["seed"], verbose=b.verbose, **rec["params"])
        return measure(P, out) if measure is not None else (out, {})

    return make


def _quantized(b: "ZooBuilder", rec: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """A TFLite copy of the target (issue 14: what a thief ships in a mobile app), int8 calibrated on the
    builder's calibration inputs (:meth:`ZooBuilder._calibration_x`)."""
    from types import SimpleNamespace

    from .postprocess import quantize

    p = rec["params"]
    data = SimpleNamespace(x_train=b._calibration_x())
    return quantize(b._get("target"), data, p["mode"], calibration_examples=p.get("calibration_examples"),
                    name=rec.get("name")), {}


def _sac(name: str):
    """A maker of the SAC zoo (:mod:`ipguard_tf.zoo.sac`, imported when first used)."""

    def make(b: "ZooBuilder", rec: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
        from .sac import SAC_MAKERS

        return SAC_MAKERS[name](b, rec)

    return make


_SAC_FAMILIES = ("sac_trained", "extract_l", "extract_p", "extract_adv", "finetune_a", "finetune_l", "prune",
                 "transfer_a", "transfer_l", "adv_finetune", "cae_surrogate")

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
    **{name: _sac(name) for name in _SAC_FAMILIES},
}


def maker_of(rec: Dict[str, Any]) -> Callable[..., Tuple[Any, Dict[str, Any]]]:
    """The maker of a record: the one it names (``maker``), ``trained`` for records with a recipe,
    ``pretrained`` for ImageNet models taken as published, else the one of its family."""
    if rec.get("maker") in MAKERS:
        return MAKERS[rec["maker"]]
    if "recipe" in rec:
        return MAKERS["trained"]
    if str(rec.get("architecture", "")).startswith("imagenet:") and rec.get("role") != "positive":
        return MAKERS["pretrained"]
    if rec["family"] not in MAKERS:
        raise ZooError(f"cannot make a member of family {rec['family']!r}")
    return MAKERS[rec["family"]]


def quantized_records(architecture: str) -> List[Tuple[str, Dict[str, Any]]]:
    """The TFLite copies of a target in a zoo: float16 weights, and full-integer int8 calibrated on
    :data:`~ipguard_tf.tflite.DEFAULT_CALIBRATION_EXAMPLES` inputs (TensorFlow's converter)."""
    from ..tflite import DEFAULT_CALIBRATION_EXAMPLES

    return [(f"tflite_{mode}", {"role": "positive", "family": "quantized", "architecture": architecture, "seed": 0,
                                "params": dict({"mode": mode}, **({"calibration_examples": DEFAULT_CALIBRATION_EXAMPLES}
                                                                  if mode == "int8" else {}))})
            for mode in ("float16", "int8")]


def _post_params(**extra: Any) -> Dict[str, Any]:
    return dict(extra, batch_size=128)


# -- the builder ----------------------------------------------------------------------------------------------------
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

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.dataset_name not in TARGETS:
            raise ZooError(f"no zoo definition for dataset {self.dataset_name!r}")
        self.arch = TARGETS[self.dataset_name]

    # -- bookkeeping ------------------------------------------------------------------------------------------
    #: the manifest's ``kind`` (None: the IPGuard paper's zoo, whose manifests have no such field)
    kind = None

    def _load_state(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in list(self.out.glob(".*.keras")) + list(self.out.glob(".*.tmp")):
            stale.unlink()  # a temporary file of a killed atomic write: never a finished model
        if (self.out / MANIFEST).exists():
            self.manifest = read_manifest(self.out)
            if self.manifest.get("dataset") != self.dataset_name:
                raise ZooError(f"{self.out} holds a {self.manifest.get('dataset')} zoo, not {self.dataset_name}")
            if self.manifest.get("kind") != self.kind:
                raise ZooError(f"{self.out} holds another kind of zoo ({self.manifest.get('kind') or 'ipguard'}), "
                               f"not {self.kind or 'ipguard'}")
        else:
            self.manifest = {"schema": SCHEMA, **({"kind": self.kind} if self.kind else {}),
                             "dataset": self.dataset_name, "target_architecture": self.arch, "models": [],
                             "rejected": []}
        self.manifest["profile"] = self.profile.name
        kind = f" --kind {self.kind}" if self.kind else ""
        self.manifest["build_command"] = f"ipguard zoo build{kind} --dataset {self.dataset_name} --profile " \
                                         f"{self.profile.name} --out {self.out}"
        self.manifest.update(self._manifest_fields())
        self.manifest["versions"] = versions()
        self.manifest["machine"] = machine()

    def _manifest_fields(self) -> Dict[str, Any]:
        """Fields a kind of zoo adds to its manifest (checked against an existing one first); none here."""
        return {}

    def record(self, name: str) -> Optional[Dict[str, Any]]:
        return next((r for r in self.manifest["models"] if r["name"] == name), None)

    def _rejected(self, name: str) -> Optional[Dict[str, Any]]:
        return next((r for r in self.manifest.get("rejected", []) if r["name"] == name), None)

    def _data(self):
        if self.dataset is None:
            from ..data import load_dataset

            self.dataset = load_dataset(self.dataset_name, self.data_dir)
        return self.dataset

    def _calibration_x(self) -> np.ndarray:
        """Inputs an int8 TFLite copy is calibrated on: the training inputs (a thief's own data in the SAC zoo)."""
        return self._data().x_train

    def _accuracy(self, model) -> float:
        ds = self._data()
        if hasattr(model, "predict") and not hasattr(model, "layers"):
            from .forest import forest_accuracy

            return forest_accuracy(model, ds.x_test, ds.y_test)
        from .train import evaluate_accuracy

        return evaluate_accuracy(model, ds.x_test, ds.y_test)

    def _store(self, name: str, model: Any, info: Dict[str, Any], suffix: str = ".keras") -> Dict[str, Any]:
        path = self.out / f"{name}{suffix}"
        save_member(model, path)
        acc = info.pop("test_accuracy", None)
        rec = {"name": name, **info, "test_accuracy": self._accuracy(model) if acc is None else acc,
               "file": path.name, "sha256": _sha256(path), "content_sha256": content_sha256(model),
               "size_bytes": path.stat().st_size,
               "created": utc_now()}
        rec["in_repo"] = rec["size_bytes"] <= self.repo_limit_mb * 1e6
        self.manifest["models"] = [r for r in self.manifest["models"] if r["name"] != name] + [rec]
        _write_manifest(self.out, self.manifest)
        log.info("zoo %s: %s (%s, acc %.4f, %.1f MB)", self.out, name, info.get("family"), rec["test_accuracy"],
                 rec["size_bytes"] / 1e6)
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
        model, extra = maker_of(info)(self, info)
        self._store(name, model, {**info, **extra, "build_seconds": round(time.perf_counter() - t0, 1)}, suffix)

    def _get(self, name: str) -> Any:
        """Load a recorded member (rebuilding it when its file is missing); the target is loaded once."""
        if name != "target":
            return load_member(self.out, name, builder=self)
        if self._target is None:
            self._target = load_member(self.out, name, builder=self)
        return self._target

    # -- the zoo ----------------------------------------------------------------------------------------------
    def build(self, only_target: bool = False) -> Dict[str, Any]:
        """Build every missing member; return the manifest."""
        from .train import get_recipe

        self._load_state()
        if self.dataset_name == "imagenet":  # the pretrained Keras ResNet50 (paper Section 5.1.1)
            self.manifest["weights"] = self.weights
            self._entry("target", {"role": "target", "family": "target", "architecture": self.arch,
                                   "weights": self.weights, "seed": 0})
        else:
            self._entry("target", {"role": "target", "family": "target", "architecture": self.arch,
                                   "recipe": get_recipe(self.dataset_name, self.arch).as_dict(), "seed": 0})
        if only_target:
            return self.manifest
        target_acc = self.record("target")["test_accuracy"]
        self._positives(target_acc)
        self._negatives()
        self.manifest["complete"] = True
        _write_manifest(self.out, self.manifest)
        return self.manifest

    def _positives(self, target_acc: float) -> None:
        from . import postprocess as P

        for name, family, params in (
                ("ftll", "FTLL", _post_params(epochs=P.FT_EPOCHS, learning_rate=P.FT_LR_LAST)),
                ("ftal", "FTAL", _post_params(epochs=P.FT_EPOCHS, learning_rate=P.FT_LR_ALL)),
                ("rtll", "RTLL", _post_params(epochs=P.RTLL_EPOCHS, learning_rate=P.FT_LR_LAST)),
                ("rtal", "RTAL", _post_params(epochs=P.FT_EPOCHS, learning_rate=P.FT_LR_LAST))):
            self._entry(name, {"role": "positive", "family": family, "architecture": self.arch, "params": params,
                               "seed": 0})
        retrain = dict(epochs=P.PRUNE_RETRAIN_EPOCHS, learning_rate=P.PRUNE_RETRAIN_LR)
        # WP: p = 0.1, 0.2, ... until the accuracy loss exceeds 3 %
        for i in range(1, int(round(self.profile.max_wp / WP_STEP)) + 1):
            p = round(i * WP_STEP, 10)
            if not self._level(f"wp_p{p:.1f}", {"family": "WP", "sparsity": p, "tool": "tfmot prune_low_magnitude",
                                                "params": _post_params(sparsity=p, architecture=self.arch, **retrain)},
                               target_acc):
                break
        for j in range(1, self.profile.max_fp_sixteenths + 1):
            if not self._level(f"fp_c{j:02d}of16", {"family": "FP", "fraction": j * FP_STEP, "sixteenths": j,
                                                    "params": _post_params(fraction=j * FP_STEP, **retrain)},
                               target_acc):
                break
        if self.dataset_name != "imagenet":  # Keras Applications models are taken as published, not converted
            for name, rec in quantized_records(self.arch):
                self._entry(name, rec, ".tflite")

    def _level(self, name: str, level: Dict[str, Any], target_acc: float) -> bool:
        """Build one pruning level; False when it (or an earlier run) found the accuracy loss above 3 %."""
        if self._rejected(name):
            return False
        rec = self.record(name)
        if rec is not None and (self.out / rec["file"]).exists():
            return True
        info = {"role": "positive", "architecture": self.arch, "seed": 0, **level}
        model, extra = maker_of(info)(self, info)
        acc = self._accuracy(model)
        if target_acc - acc > MAX_ACCURACY_LOSS:
            self.manifest.setdefault("rejected", []).append(
                {"name": name, **{k: v for k, v in level.items() if k not in ("params", "tool")},
                 "test_accuracy": acc, "reason": f"accuracy loss {target_acc - acc:.4f} > {MAX_ACCURACY_LOSS}"})
            _write_manifest(self.out, self.manifest)
            log.info("zoo: %s rejected (accuracy %.4f, target %.4f)", name, acc, target_acc)
            return False
        self._store(name, model, {**info, **extra, "test_accuracy": acc})
        return True

    def _pretrained_negatives(self) -> None:
        """ImageNet: the best pretrained Keras model of each other family (paper Section 5.1.2); not stored,
        built from the weights when loaded."""
        from ..imagenet import SUSPECTS, pixel_model

        for name in SUSPECTS:
            member = f"pretrained_{name}"
            if self.record(member) is not None:
                continue
            acc = self._accuracy(pixel_model(name, self.weights))
            rec = {"name": member, "role": "negative", "family": name, "architecture": f"imagenet:{name}",
                   "weights": self.weights, "seed": None, "test_accuracy": acc, "file": None, "sha256": None,
                   "size_bytes": 0, "in_repo": False, "created": utc_now()}
            self.manifest["models"].append(rec)
            _write_manifest(self.out, self.manifest)
            log.info("zoo %s: %s (pretrained, acc %.4f)", self.out, member, acc)

    def _negatives(self) -> None:
        from .forest import N_TREES
        from .train import VGG16_NEGATIVE, get_recipe

        if self.dataset_name == "imagenet":
            self._pretrained_negatives()
            return

        def trained(family: str, arch: str, count: int) -> None:
            recipe = get_recipe(self.dataset_name, arch).as_dict()
            for s in range(1, count + 1):
                self._entry(f"{family}_seed{s:02d}", {"role": "negative", "family": family, "architecture": arch,
                                                      "recipe": recipe, "seed": s})

        trained("same_arch", self.arch, self.profile.same_arch)
        trained("lenet5", "lenet5", self.profile.lenet5)
        for s in range(1, self.profile.forests + 1):
            self._entry(f"rf_seed{s:02d}", {"role": "negative", "family": "random_forest", "architecture": "rf",
                                            "features": "flattened pixels", "params": {"n_estimators": N_TREES},
                                            "seed": s}, suffix=".skops")
        trained("vgg16", VGG16_NEGATIVE.get(self.dataset_name, "vgg16"), self.profile.vgg16)  # slowest last
        self._cae_ensemble()

    def _cae_ensemble(self) -> None:
        """CAE's defender ensemble (roles ``surrogate`` and ``reference``, not suspects): surrogates are the
        target's architecture and recipe trained on the target's labels (:func:`_student`), references the same
        trained on the true labels, with seeds no negative uses (301, ...; surrogates 201, ...). The defender's
        data is the target's own training set, as in Lukas et al. (RorschachChen's ``prepare_models``: the same
        CIFAR-10 training set for source, surrogates and references)."""
        from .train import get_recipe

        recipe = get_recipe(self.dataset_name, self.arch).as_dict()
        for s in range(1, self.profile.cae_members + 1):
            self._entry(f"cae_surrogate_seed{s:02d}", {"role": "surrogate", "family": "cae_surrogate",
                                                       "maker": "student", "architecture": self.arch,
                                                       "recipe": recipe, "seed": 200 + s})
            self._entry(f"cae_reference_seed{s:02d}", {"role": "reference", "family": "cae_reference",
                                                       "maker": "trained", "architecture": self.arch,
                                                       "recipe": recipe, "seed": 300 + s})

    def rebuild(self, name: str) -> Any:
        """Rebuild one recorded member whose file is missing, with the maker and the parameters its record
        holds (deterministic training: the content SHA-256 is compared with the recorded one)."""
        rec = self.record(name)
        if rec is None:
            raise ZooError(f"{self.out}: no member {name!r}")
        model, _ = maker_of(rec)(self, rec)
        if rec.get("file") is None:
            return model
        save_member(model, self.out / rec["file"])
        if content_sha256(model) != rec.get("content_sha256"):
            log.warning("rebuilt %s differs from the recorded model (content SHA-256); another machine or other "
                        "library versions?", name)
        return model


def load_member(folder: Path, name: str, builder: Optional[ZooBuilder] = None, data_dir: Optional[str] = None,
                dataset: Any = None) -> Any:
    """Load zoo member ``name`` from ``folder``; rebuild it if its file is missing (models not kept in the repo)."""
    folder = Path(folder)
    manifest = builder.manifest if builder is not None else read_manifest(folder)
    rec = next((r for r in manifest["models"] if r["name"] == name), None)
    if rec is None:
        raise ZooError(f"{folder}: no member {name!r}")
    if rec.get("file") is None:  # pretrained (ImageNet negatives): built from its weights
        return _pretrained(builder, rec)[0]
    path = folder / rec["file"]
    if not path.exists():
        log.info("%s missing: rebuilding it", path)
        b = builder or builder_for(folder, manifest, data_dir=data_dir, dataset=dataset)
        if builder is None:
            b._load_state()
        return b.rebuild(name)
    return load_member_file(path)


def builder_for(folder: Path, manifest: Dict[str, Any], data_dir: Optional[str] = None,
                dataset: Any = None) -> "ZooBuilder":
    """A builder for an existing zoo (its kind and profile from its manifest), e.g. to rebuild a member."""
    if manifest.get("kind") == "sac":
        from .sac import SAC_PROFILES, SACProfile, SACZooBuilder

        prof = manifest.get("profile_spec")
        profile = SACProfile(**{k: tuple(v) if isinstance(v, list) else v for k, v in prof.items()}) if prof \
            else SAC_PROFILES["quick"]
        return SACZooBuilder(manifest["dataset"], folder, profile, data_dir=data_dir, dataset=dataset, verbose=0)
    return ZooBuilder(manifest["dataset"], folder, PROFILES.get(manifest.get("profile", "quick"), PROFILES["quick"]),
                      data_dir=data_dir, dataset=dataset, verbose=0)


def missing_members(folder: Path) -> List[Dict[str, Any]]:
    """Records whose model file is absent (not kept in the repository): loading them rebuilds them."""
    folder = Path(folder)
    return [r for r in members(folder) if r.get("file") and not (folder / r["file"]).exists()]


def rebuild_note(folder: Path, missing: List[Dict[str, Any]]) -> str:
    """One line saying what loading ``missing`` will rebuild and how long that took when they were built."""
    known = [r["build_seconds"] for r in missing if r.get("build_seconds") is not None]
    took = f"about {sum(known) / 60:.0f} min when built" if known else "time not recorded"
    if known and len(known) < len(missing):
        took += f" ({len(missing) - len(known)} without a recorded time)"
    names = ", ".join(r["name"] for r in missing[:8]) + (" ..." if len(missing) > 8 else "")
    return f"{folder}: {len(missing)} members absent, rebuilt before use ({took}): {names}"


#: roles of a fingerprinting method's own models in a zoo (CAE's surrogates and references): no suspects
ENSEMBLE_ROLES = ("surrogate", "reference")


def members(folder: Path) -> List[Dict[str, Any]]:
    """The zoo's records (target first, then positives, then negatives)."""
    order = {"target": 0, "positive": 1, "negative": 2, "surrogate": 3, "reference": 4}
    return sorted(read_manifest(folder)["models"], key=lambda r: (order.get(r["role"], 3), r["name"]))


def table2_rows(folder: Path) -> List[Dict[str, Any]]:
    """Paper Table 2 for a zoo: the target, each positive, and each negative family as an accuracy range."""
    recs = members(folder)
    rows = []
    for r in recs:
        if r["role"] in ("target", "positive"):
            detail = ""
            if r["family"] == "WP":
                detail = f"p={r['sparsity']:.1f} (measured {r['measured_sparsity']:.3f})"
            elif r["family"] == "FP":
                detail = f"c={r['sixteenths']}/16"
            rows.append({"type": r["role"], "classifier": r["family"], "detail": detail,
                         "accuracy": f"{r['test_accuracy']:.4f}", "count": 1})
    fams: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for r in recs:  # negatives, then CAE's ensemble (not suspects; not in the paper's Table 2)
        if r["role"] == "negative" or r["role"] in ENSEMBLE_ROLES:
            fams.setdefault((r["role"], r["family"]), []).append(r)
    for (role, fam), rs in fams.items():
        accs = [r["test_accuracy"] for r in rs]
        archs = sorted({r.get("architecture", "") for r in rs})
        # a family trained as another architecture than its name (Fashion-MNIST's VGG16 negatives: vgg16_w8)
        detail = "CAE ensemble" if role != "negative" else ", ".join(
            a for a in archs if a not in (fam, "rf") and fam != "same_arch")
        rows.append({"type": role, "classifier": fam, "detail": detail,
                     "accuracy": f"[{min(accs):.4f}, {max(accs):.4f}]", "count": len(accs)})
    return rows
