"""A zoo folder on disk: its manifest (schema, reading with upgrades, atomic writing), its member files (saved
and loaded by suffix: ``.keras``, ``.skops`` forests, ``.tflite``) and the records (:func:`members`, what is
absent, Table 2). Building and rebuilding members is the builders' (:mod:`ipguard_tf.zoo.builder`,
:mod:`ipguard_tf.zoo.sac`); loading a member that may need rebuilding is :func:`ipguard_tf.zoo.members.load_member`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import keras

from ipguard_tf.core.errors import IPGuardError
from ipguard_tf.io.env_info import utc_now
from ipguard_tf.io.files import atomic_write_bytes
from ipguard_tf.models.classifier import save_keras_atomic
from ipguard_tf.models.tflite import TFLiteModel
from ipguard_tf.zoo.forest import load_forest, save_forest

SCHEMA = "ipguard_tf.zoo/2"
OLD_SCHEMAS = ("ipguard_tf.zoo/1",)
MANIFEST = "manifest.json"


class ZooError(IPGuardError):
    pass


# -- manifest -------------------------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: the file a build holds locked while it writes a zoo folder (git-ignored)
LOCK_FILE = ".build.lock"


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Hold the zoo folder's build lock for the block: a second build of the same folder (this machine, or any
    machine sharing the folder over a file system with POSIX locks) stops at once with a :class:`ZooError` instead
    of writing members and manifest entries that disagree (issue 34). The lock dies with its process."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise ZooError(f"{folder}: another build is writing this zoo ({other}); wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)


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


def write_manifest(folder: Path, manifest: Dict[str, Any]) -> None:
    manifest["updated"] = utc_now()
    atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())
    big = sorted(r["file"] for r in manifest["models"] if r.get("file") and not r.get("in_repo", True))
    gi = "# models too large for the repository: rebuilt on demand by `ipguard zoo build`\n" + "".join(
        f"{f}\n" for f in big
    )
    atomic_write_bytes(folder / ".gitignore", gi.encode())


# -- saving / loading members ---------------------------------------------------------------------------------------
def save_member(model: Any, path: Path) -> None:
    """Write a Keras 3 model (.keras, without optimizer state), a forest (.skops) or a TFLite model (.tflite)
    atomically."""
    if path.suffix == ".tflite":
        atomic_write_bytes(path, model.content)
    elif path.suffix == ".skops":
        save_forest(model, path)
    else:
        save_keras_atomic(model, path)


def load_member_file(path: Path) -> Any:
    if path.suffix == ".tflite":
        return TFLiteModel(path)
    if path.suffix == ".skops":
        return load_forest(path)
    return keras.saving.load_model(str(path), compile=False)


def missing_members(folder: Path) -> List[Dict[str, Any]]:
    """Records whose model file is absent (not kept in the repository): loading them rebuilds them."""
    folder = Path(folder)
    return [r for r in members(folder) if r.get("file") and not (folder / r["file"]).exists()]


def seconds_of(rec: Dict[str, Any]) -> Any:
    """How long making a member took: its ``build_seconds`` (when the zoo was built), else its ``rebuild_seconds``
    (measured by ``experiments/time_rebuilds.py`` on the machine in ``rebuild_machine``), else None."""
    for key in ("build_seconds", "rebuild_seconds"):
        if rec.get(key) is not None:
            return rec[key]
    return None


def rebuild_note(folder: Path, missing: List[Dict[str, Any]]) -> str:
    """One line saying what loading ``missing`` will rebuild and about how long that takes: the times recorded
    for them (:func:`seconds_of`: when the zoo was built, or when they were rebuilt); for a
    member without one, an estimate labelled as such: the mean recorded time of the zoo's other members of its
    family (of its architecture where some are); "time not recorded" for members whose family has none."""
    try:
        timed = [r for r in read_manifest(Path(folder))["models"] if seconds_of(r) is not None]
    except ZooError:
        timed = [r for r in missing if seconds_of(r) is not None]

    def estimate(rec: Dict[str, Any]) -> Any:
        family = [seconds_of(r) for r in timed if r.get("family") == rec.get("family")]
        same = [
            seconds_of(r)
            for r in timed
            if r.get("family") == rec.get("family") and r.get("architecture") == rec.get("architecture")
        ]
        use = same or family
        return sum(use) / len(use) if use else None

    def span(seconds: float) -> str:
        return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"

    def some(count: int) -> str:  # "for 3" where the part covers only some of the members
        return f" for {count}" if count < len(missing) else ""

    recorded = [seconds_of(r) for r in missing if seconds_of(r) is not None]
    guessed = [e for e in (estimate(r) for r in missing if seconds_of(r) is None) if e is not None]
    unknown = len(missing) - len(recorded) - len(guessed)
    parts = []
    if recorded:
        parts.append(f"about {span(sum(recorded))} as recorded{some(len(recorded))}")
    if guessed:
        parts.append(
            f"{'' if recorded else 'about '}{span(sum(guessed))} estimated for {len(guessed)} from their "
            "families' recorded times"
        )
    if unknown:
        parts.append(f"time not recorded{some(unknown)}")
    names = ", ".join(r["name"] for r in missing[:8]) + (" ..." if len(missing) > 8 else "")
    return f"{folder}: {len(missing)} members absent, rebuilt before use ({'; '.join(parts)}): {names}"


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
            rows.append(
                {
                    "type": r["role"],
                    "classifier": r["family"],
                    "detail": detail,
                    "accuracy": f"{r['test_accuracy']:.4f}",
                    "count": 1,
                }
            )
    fams: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for r in recs:  # negatives, then CAE's ensemble (not suspects; not in the paper's Table 2)
        if r["role"] == "negative" or r["role"] in ENSEMBLE_ROLES:
            fams.setdefault((r["role"], r["family"]), []).append(r)
    for (role, fam), rs in fams.items():
        accs = [r["test_accuracy"] for r in rs]
        archs = sorted({r.get("architecture", "") for r in rs})
        # a family trained as another architecture than its name (Fashion-MNIST's VGG16 negatives: vgg16_w8)
        detail = (
            "CAE ensemble"
            if role != "negative"
            else ", ".join(a for a in archs if a not in (fam, "rf") and fam != "same_arch")
        )
        rows.append(
            {
                "type": role,
                "classifier": fam,
                "detail": detail,
                "accuracy": f"[{min(accs):.4f}, {max(accs):.4f}]",
                "count": len(accs),
            }
        )
    return rows
