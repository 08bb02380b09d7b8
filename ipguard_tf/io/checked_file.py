"""Checked ``.npz`` files: named arrays, metadata as UTF-8 JSON and a SHA-256 over both, written atomically.

The one format behind every file whose tampering must be noticed: fingerprints
(:mod:`ipguard_tf.core.fingerprint`) and anti-piracy keys (:mod:`ipguard_tf.protect.keyfile`). Read with
``allow_pickle=False`` (loading cannot run code). The digest covers the schema name, each array's name, dtype,
shape and bytes (in name order) and the metadata bytes, so that any change to any of them is a mismatch.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict, Iterable, Tuple, Type, Union

import numpy as np

from ipguard_tf.io.files import atomic_write_bytes


def digest(schema: str, arrays: Dict[str, np.ndarray], meta_bytes: bytes) -> str:
    """SHA-256 (hex) over the schema name, the arrays (name, dtype, shape, bytes; in name order) and the
    metadata bytes."""
    h = hashlib.sha256()
    h.update(schema.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode() + b"\0" + str(a.dtype).encode() + b"\0" + str(a.shape).encode() + b"\0")
        h.update(a.tobytes())
    h.update(meta_bytes)
    return h.hexdigest()


def json_default(o: Any) -> Any:
    """``json.dumps``' ``default`` for NumPy scalars and arrays and paths."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_checked_npz(
    path: Union[str, Path], arrays: Dict[str, np.ndarray], metadata: Dict[str, Any], schema: str
) -> str:
    """Write ``arrays`` and ``metadata`` (with ``schema`` added) to ``path`` atomically; return the SHA-256."""
    meta = dict(metadata)
    meta["schema"] = schema
    meta_bytes = json.dumps(meta, sort_keys=True, default=json_default).encode("utf-8")
    sha = digest(schema, arrays, meta_bytes)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        **arrays,
        metadata=np.frombuffer(meta_bytes, dtype=np.uint8),
        sha256=np.frombuffer(sha.encode("ascii"), dtype=np.uint8),
    )
    atomic_write_bytes(path, buf.getvalue())
    return sha


def read_checked_npz(
    path: Union[str, Path], schema: str, error: Type[Exception], what: str, required: Iterable[str] = ()
) -> Tuple[Dict[str, np.ndarray], Dict[str, Any], str]:
    """Read and check a file written by :func:`write_checked_npz`: ``(arrays, metadata, sha256)``.

    Any problem (absent, a folder, truncated, not such a file, ``required`` arrays missing, metadata not JSON,
    another schema, digest mismatch) raises ``error`` with one line naming ``what`` the file should have been."""
    path = Path(path)
    if not path.exists():
        raise error(f"{what} file {path} does not exist")
    if path.is_dir():
        raise error(f"{what} path {path} is a folder, not a file")
    need = set(required) | {"metadata", "sha256"}
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if not need <= names:
                raise error(f"{path} is not an ipguard_tf {what} (missing {', '.join(sorted(need - names))})")
            arrays = {k: z[k] for k in sorted(names - {"metadata", "sha256"})}
            meta_bytes = z["metadata"].tobytes()
            stored = z["sha256"].tobytes().decode("ascii", errors="replace")
    except error:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zlib.error) as exc:
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise error(f"{path} is truncated or not {article} {what} file ({type(exc).__name__})") from None
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise error(f"{path}: metadata is not valid JSON (file altered or corrupt)") from None
    if not isinstance(meta, dict) or meta.get("schema") != schema:
        found = meta.get("schema") if isinstance(meta, dict) else None
        raise error(f"{path}: schema {found!r} is not supported (expected {schema!r}; is it a {what} file?)")
    if digest(schema, arrays, meta_bytes) != stored:
        raise error(f"{path}: SHA-256 mismatch, the file was altered or is corrupt")
    return arrays, meta, stored
