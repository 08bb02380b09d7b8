"""The suspect zoo: build (resumably), list, and load the target, its post-processed copies and the negatives.

A zoo is a folder with one file per model and ``manifest.json`` (schema ``ipguard_tf.zoo/1``) holding one record
per model: name, role (target / positive / negative), family, recipe or post-processing parameters, seed, test
accuracy, SHA-256 and size of the file, and for pruning the measured sparsity or pruned-filter fractions.

Resumable: each model is written atomically and its record added to the manifest (also written atomically)
right after, so a killed build restarts at the first model without a record, and never finds a half-written
model. A model file present without a record (killed between the two writes) is adopted: loaded, evaluated and
recorded. Pruning levels whose accuracy loss exceeded 3 % are recorded as ``rejected`` so that a resumed build
does not retrain them.

Models larger than ``repo_limit_mb`` (VGG16, random forests) are marked ``in_repo: false`` and listed in the
folder's ``.gitignore``; :func:`load_member` rebuilds such a model on demand when its file is missing (training
is deterministic, so the rebuilt file has the recorded SHA-256 on the same machine and library versions;
a mismatch is logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..constants import FP_STEP, MAX_ACCURACY_LOSS, WP_STEP
from ..env_info import machine, utc_now, versions
from ..errors import IPGuardError
from ..fingerprint import atomic_write_bytes

log = logging.getLogger(__name__)

SCHEMA = "ipguard_tf.zoo/1"
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


PROFILES: Dict[str, Profile] = {
    # what pretrained/fashion_mnist holds: every post-processing, 10 same-architecture negatives, 3 of each other
    # architecture, 10 random forests
    "quick": Profile("quick", same_arch=10, lenet5=3, vgg16=3, forests=10),
    # the paper's counts (Section 5.1.2): 50 same-architecture models, 10 LeNet-5, 10 VGG16, 10 random forests
    "paper": Profile("paper", same_arch=50, lenet5=10, vgg16=10, forests=10),
    # for tests: a handful of everything
    "tiny": Profile("tiny", same_arch=2, lenet5=1, vgg16=0, forests=1, max_wp=0.2, max_fp_sixteenths=2),
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
    timestamps): the weight arrays of a Keras model, or the node and value arrays of a forest's trees."""
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


def read_manifest(folder: Path) -> Dict[str, Any]:
    p = Path(folder) / MANIFEST
    if not p.exists():
        raise ZooError(f"{folder} is not a zoo (no {MANIFEST})")
    try:
        m = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ZooError(f"{p}: unreadable manifest ({exc})") from None
    if m.get("schema") != SCHEMA:
        raise ZooError(f"{p}: schema {m.get('schema')!r} is not {SCHEMA!r}")
    return m


def is_zoo(path: Any) -> bool:
    p = Path(path)
    if not (p.is_dir() and (p / MANIFEST).exists()):
        return False
    try:
        return json.loads((p / MANIFEST).read_text()).get("schema") == SCHEMA
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
    """Write a Keras 3 model (.keras, without optimizer state) or a forest (.skops) atomically."""
    if path.suffix == ".skops":
        from .forest import save_forest

        save_forest(model, path)
    else:
        from ..models import save_keras_atomic

        save_keras_atomic(model, path)


def load_member_file(path: Path) -> Any:
    if path.suffix == ".skops":
        from .forest import load_forest

        return load_forest(path)
    import keras

    return keras.saving.load_model(str(path), compile=False)


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

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.dataset_name not in TARGETS:
            raise ZooError(f"no zoo definition for dataset {self.dataset_name!r}")
        self.arch = TARGETS[self.dataset_name]

    # -- bookkeeping ------------------------------------------------------------------------------------------
    def _load_state(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in list(self.out.glob(".*.keras")) + list(self.out.glob(".*.tmp")):
            stale.unlink()  # a temporary file of a killed atomic write: never a finished model
        if (self.out / MANIFEST).exists():
            self.manifest = read_manifest(self.out)
            if self.manifest.get("dataset") != self.dataset_name:
                raise ZooError(f"{self.out} holds a {self.manifest.get('dataset')} zoo, not {self.dataset_name}")
        else:
            self.manifest = {"schema": SCHEMA, "dataset": self.dataset_name, "target_architecture": self.arch,
                             "models": [], "rejected": []}
        self.manifest["profile"] = self.profile.name
        self.manifest["build_command"] = f"ipguard zoo build --dataset {self.dataset_name} --profile " \
                                         f"{self.profile.name} --out {self.out}"
        self.manifest["versions"] = versions()
        self.manifest["machine"] = machine()

    def record(self, name: str) -> Optional[Dict[str, Any]]:
        return next((r for r in self.manifest["models"] if r["name"] == name), None)

    def _rejected(self, name: str) -> Optional[Dict[str, Any]]:
        return next((r for r in self.manifest.get("rejected", []) if r["name"] == name), None)

    def _data(self):
        if self.dataset is None:
            from ..data import load_dataset

            self.dataset = load_dataset(self.dataset_name, self.data_dir)
        return self.dataset

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

    def _entry(self, name: str, info: Dict[str, Any], make: Callable[[], Any], suffix: str = ".keras") -> Any:
        """Return the member ``name``, building it with ``make`` unless recorded (or adopting an orphan file)."""
        rec = self.record(name)
        path = self.out / f"{name}{suffix}"
        if rec is not None and path.exists():
            return None  # built already; loaded lazily by whoever needs it
        if rec is None and path.exists():
            log.info("adopting %s (file present, no record)", path)
            model = load_member_file(path)
            self._store(name, model, dict(info))
            return model
        model = make()
        self._store(name, model, dict(info), suffix)
        return model

    def _get(self, name: str) -> Any:
        """Load a recorded member (rebuilding it when its file is missing)."""
        return load_member(self.out, name, builder=self)

    # -- the zoo ----------------------------------------------------------------------------------------------
    def build(self, only_target: bool = False) -> Dict[str, Any]:
        """Build every missing member; return the manifest."""
        from .train import get_recipe, train_model

        self._load_state()
        v = self.verbose
        if self.dataset_name == "imagenet":  # the pretrained Keras ResNet50 (paper Section 5.1.1)
            from ..imagenet import pixel_model

            self.manifest["weights"] = self.weights
            self._entry("target", {"role": "target", "family": "target", "architecture": self.arch,
                                   "weights": self.weights, "seed": 0},
                        lambda: pixel_model("ResNet50", self.weights))
        else:
            recipe = get_recipe(self.dataset_name, self.arch)
            self._entry("target", {"role": "target", "family": "target", "architecture": self.arch,
                                   "recipe": recipe.as_dict(), "seed": 0},
                        lambda: train_model(self._data(), recipe, 0, verbose=v))
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

        v = self.verbose
        fam = [("ftll", "FTLL", P.fine_tune_last_layer, {"epochs": P.FT_EPOCHS, "learning_rate": P.FT_LR_LAST}),
               ("ftal", "FTAL", P.fine_tune_all_layers, {"epochs": P.FT_EPOCHS, "learning_rate": P.FT_LR_ALL}),
               ("rtll", "RTLL", P.retrain_last_layer, {"epochs": P.RTLL_EPOCHS, "learning_rate": P.FT_LR_LAST}),
               ("rtal", "RTAL", P.retrain_all_layers, {"epochs": P.FT_EPOCHS, "learning_rate": P.FT_LR_LAST})]
        for name, family, fn, params in fam:
            self._entry(name, {"role": "positive", "family": family, "architecture": self.arch, "params": params,
                               "seed": 0},
                        lambda fn=fn: fn(self._get("target"), self._data(), seed=0, verbose=v))
        # WP: p = 0.1, 0.2, ... until the accuracy loss exceeds 3 %
        steps = int(round(self.profile.max_wp / WP_STEP))
        for i in range(1, steps + 1):
            p = round(i * WP_STEP, 10)
            if not self._level("wp", f"wp_p{p:.1f}", "WP", {"sparsity": p}, target_acc,
                               lambda p=p: self._wp(p)):
                break
        for j in range(1, self.profile.max_fp_sixteenths + 1):
            if not self._level("fp", f"fp_c{j:02d}of16", "FP", {"fraction": j * FP_STEP, "sixteenths": j},
                               target_acc, lambda j=j: self._fp(j * FP_STEP)):
                break

    def _wp(self, p: float):
        from . import postprocess as P

        model = P.weight_prune(self._get("target"), self._data(), p, architecture=self.arch, seed=0,
                               verbose=self.verbose)
        return model, {"measured_sparsity": P.measured_sparsity(model),
                       "params": {"sparsity": p, "epochs": P.PRUNE_RETRAIN_EPOCHS,
                                  "learning_rate": P.PRUNE_RETRAIN_LR, "tool": "tfmot prune_low_magnitude"}}

    def _fp(self, c: float):
        from . import postprocess as P

        model, fractions = P.filter_prune(self._get("target"), self._data(), c, seed=0, verbose=self.verbose)
        return model, {"pruned_filter_fractions": fractions,
                       "params": {"fraction": c, "epochs": P.PRUNE_RETRAIN_EPOCHS,
                                  "learning_rate": P.PRUNE_RETRAIN_LR}}

    def _level(self, kind: str, name: str, family: str, level: Dict[str, Any], target_acc: float,
               make: Callable[[], Tuple[Any, Dict[str, Any]]]) -> bool:
        """Build one pruning level; False when it (or an earlier run) found the accuracy loss above 3 %."""
        if self._rejected(name):
            return False
        rec = self.record(name)
        if rec is not None and (self.out / rec["file"]).exists():
            return True
        model, extra = make()
        acc = self._accuracy(model)
        if target_acc - acc > MAX_ACCURACY_LOSS:
            self.manifest.setdefault("rejected", []).append(
                {"name": name, "family": family, **level, "test_accuracy": acc,
                 "reason": f"accuracy loss {target_acc - acc:.4f} > {MAX_ACCURACY_LOSS}"})
            _write_manifest(self.out, self.manifest)
            log.info("zoo: %s rejected (accuracy %.4f, target %.4f)", name, acc, target_acc)
            return False
        info = {"role": "positive", "family": family, "architecture": self.arch, **level, "seed": 0,
                "test_accuracy": acc, **extra}
        self._store(name, model, info)
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
        from .forest import train_forest
        from .train import get_recipe, train_model

        if self.dataset_name == "imagenet":
            self._pretrained_negatives()
            return

        v = self.verbose
        recipe = get_recipe(self.dataset_name, self.arch)
        for s in range(1, self.profile.same_arch + 1):
            self._entry(f"same_arch_seed{s:02d}", {"role": "negative", "family": "same_arch",
                                                   "architecture": self.arch, "recipe": recipe.as_dict(), "seed": s},
                        lambda s=s: train_model(self._data(), recipe, s, verbose=v))
        def arch_models(arch: str, count: int) -> None:
            r = get_recipe(self.dataset_name, arch)
            for s in range(1, count + 1):
                self._entry(f"{arch}_seed{s:02d}", {"role": "negative", "family": arch, "architecture": arch,
                                                    "recipe": r.as_dict(), "seed": s},
                            lambda s=s, r=r: train_model(self._data(), r, s, verbose=v))

        arch_models("lenet5", self.profile.lenet5)
        for s in range(1, self.profile.forests + 1):
            self._entry(f"rf_seed{s:02d}", {"role": "negative", "family": "random_forest", "architecture": "rf",
                                            "params": {"n_estimators": 20, "features": "flattened pixels"},
                                            "seed": s},
                        lambda s=s: train_forest(self._data(), s), suffix=".skops")
        arch_models("vgg16", self.profile.vgg16)  # slowest last

    def rebuild(self, name: str) -> Any:
        """Rebuild one recorded member whose file is missing (deterministic training; SHA-256 compared)."""
        rec = self.record(name)
        if rec is None:
            raise ZooError(f"{self.out}: no member {name!r}")
        from . import postprocess as P
        from .forest import train_forest
        from .train import get_recipe, train_model

        ds, fam, seed = self._data(), rec["family"], rec.get("seed", 0)
        if self.dataset_name == "imagenet" and (fam == "target" or rec.get("file") is None):
            from ..imagenet import pixel_model

            model = pixel_model(rec["architecture"].split(":", 1)[1], rec.get("weights", self.weights))
            if rec.get("file") is None:
                return model
        elif fam in ("target", "same_arch", "lenet5", "vgg16"):
            model = train_model(ds, get_recipe(self.dataset_name, rec["architecture"]), seed, verbose=self.verbose)
        elif fam == "random_forest":
            model = train_forest(ds, seed)
        else:
            target = self._get("target")
            fns = {"FTLL": P.fine_tune_last_layer, "FTAL": P.fine_tune_all_layers, "RTLL": P.retrain_last_layer,
                   "RTAL": P.retrain_all_layers}
            if fam in fns:
                model = fns[fam](target, ds, seed=seed, verbose=self.verbose)
            elif fam == "WP":
                model = P.weight_prune(target, ds, rec["sparsity"], architecture=self.arch, seed=seed,
                                       verbose=self.verbose)
            elif fam == "FP":
                model, _ = P.filter_prune(target, ds, rec["fraction"], seed=seed, verbose=self.verbose)
            else:
                raise ZooError(f"cannot rebuild family {fam!r}")
        path = self.out / rec["file"]
        save_member(model, path)
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
        from ..imagenet import pixel_model

        return pixel_model(rec["architecture"].split(":", 1)[1], rec.get("weights"))
    path = folder / rec["file"]
    if not path.exists():
        log.info("%s missing: rebuilding it", path)
        b = builder or ZooBuilder(manifest["dataset"], folder, PROFILES.get(manifest.get("profile", "quick"),
                                                                             PROFILES["quick"]), data_dir=data_dir,
                                dataset=dataset, verbose=0)
        if builder is None:
            b._load_state()
        return b.rebuild(name)
    return load_member_file(path)


def members(folder: Path) -> List[Dict[str, Any]]:
    """The zoo's records (target first, then positives, then negatives)."""
    order = {"target": 0, "positive": 1, "negative": 2}
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
    fams: Dict[str, List[float]] = {}
    for r in recs:
        if r["role"] == "negative":
            fams.setdefault(r["family"], []).append(r["test_accuracy"])
    for fam, accs in fams.items():
        rows.append({"type": "negative", "classifier": fam, "detail": "",
                     "accuracy": f"[{min(accs):.4f}, {max(accs):.4f}]", "count": len(accs)})
    return rows
