"""Checkpoints that make a long extraction resumable.

Every :class:`~ipguard_tf.search.AdamSearch` run (one batch of IPGuard points, one binary-search step of
CW-L2) is an *entry*, keyed by a SHA-256 of everything it starts from (initial points, labels, constants,
hyperparameters). While an entry runs, its whole state (points, per-point Adam moments and step counts, best
points, flags, the iteration counter) is saved every ``every`` seconds between graph segments, and once more
when it finishes. A resumed run recomputes the same entries in the same order: finished ones are restored
without computing, the interrupted one continues from its last saved segment, so the result is the one an
uninterrupted run gives (the same sequence of batch compositions, hence the same arithmetic).

The file (``.npz``, read with ``allow_pickle=False``) also records a run identity (model weights, method,
hyperparameters, seed, n); a checkpoint of another run is refused with a one-line error, never mixed in.
It is written atomically, so a kill leaves either the previous or the new checkpoint, never half of one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ipguard_tf.core.errors import IPGuardError, ParameterError
from ipguard_tf.io.files import atomic_write_bytes

log = logging.getLogger(__name__)

SCHEMA = "ipguard_tf.checkpoint/1"


class CheckpointError(IPGuardError):
    """A checkpoint file is unreadable or belongs to another run."""


def content_key(*parts: Any) -> str:
    """SHA-256 over numpy arrays (dtype, shape, bytes) and JSON-able values, in order."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


class SearchCheckpoint:
    """A checkpoint file for one extraction (see the module docstring).

    Args:
        path: the checkpoint file (created on the first save).
        run_id: identity of the run; an existing file with another identity raises :class:`CheckpointError`.
        every: seconds between saves of a running entry (0: after every segment).
    """

    def __init__(self, path: Union[str, Path], run_id: str, every: float = 60.0) -> None:
        if not every >= 0:
            raise ParameterError(f"checkpoint interval must be >= 0 seconds, got {every!r}")
        self.path = Path(path)
        self.run_id = run_id
        self.every = float(every)
        self._entries: Dict[str, Tuple[Dict[str, np.ndarray], Dict[str, Any]]] = {}
        self._last_save = time.monotonic()
        self._lock = threading.Lock()
        self.resumed = False
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as z:
                index = json.loads(z["index"].tobytes().decode("utf-8"))
                if index.get("schema") != SCHEMA:
                    raise ValueError("schema")
                arrays = {name: z[name] for name in z.files if name != "index"}
        except Exception:
            raise CheckpointError(f"checkpoint {self.path} is unreadable; delete it to start afresh") from None
        if index.get("run_id") != self.run_id:
            raise CheckpointError(f"checkpoint {self.path} belongs to another run (model, method, settings, seed or "
                                  "data differ); delete it or choose another --checkpoint file")
        for key, scalars in index["entries"].items():
            fields = {name.split("/", 1)[1]: a for name, a in arrays.items() if name.startswith(key + "/")}
            self._entries[key] = (fields, scalars)
        self.resumed = bool(self._entries)
        log.info("resuming from checkpoint %s (%d search run(s) saved)", self.path, len(self._entries))

    def get(self, key: str) -> Optional[Tuple[Dict[str, np.ndarray], Dict[str, Any]]]:
        """The saved (arrays, scalars) of an entry, or None."""
        with self._lock:
            e = self._entries.get(key)
            return None if e is None else ({k: v.copy() for k, v in e[0].items()}, dict(e[1]))

    def put(self, key: str, arrays: Dict[str, np.ndarray], scalars: Dict[str, Any], *, force: bool = False) -> None:
        """Save an entry's state when ``force`` or ``every`` seconds have passed since the last save; otherwise
        do nothing (no copy: this is called after every segment of a search, on its hot path)."""
        with self._lock:
            if force or time.monotonic() - self._last_save >= self.every:
                self._entries[key] = ({k: np.array(v, copy=True) for k, v in arrays.items()}, dict(scalars))
                self._write()

    def _write(self) -> None:
        index = {"schema": SCHEMA, "run_id": self.run_id, "entries": {k: e[1] for k, e in self._entries.items()}}
        out = {"index": np.frombuffer(json.dumps(index).encode("utf-8"), np.uint8)}
        for key, (arrays, _) in self._entries.items():
            out.update({f"{key}/{name}": a for name, a in arrays.items()})
        buf = io.BytesIO()
        np.savez(buf, **out)
        atomic_write_bytes(self.path, buf.getvalue())
        self._last_save = time.monotonic()
        log.debug("checkpoint saved: %s", self.path)

    def remove(self) -> None:
        """Delete the file (after the fingerprint has been written)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
