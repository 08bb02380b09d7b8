"""Resumable state: one file format for everything that continues after an interruption, and the checkpoint of
an extraction built on it.

:class:`StateFile` is the store. A state file is an ``.npz`` archive (read with ``allow_pickle=False``) of
named arrays plus one ``__index__`` array, UTF-8 JSON holding the file's schema, the identity of the run that
wrote it and JSON-able scalars. It is written atomically (:func:`~ipguard_tf.io.files.atomic_write_bytes`), so
a kill leaves either the previous or the new state, never half of one. Reading it back, an unreadable file
(not an archive, truncated, another schema) and a file of another run (another identity) are each refused with
a one-line error of the caller's :class:`~ipguard_tf.core.errors.IPGuardError` class that says to delete it;
a state file is never mixed into another run. Its users: the extraction searches (:class:`SearchCheckpoint`
below), CAE's rounds (:mod:`ipguard_tf.methods.cae`), the WGAN training steps
(:mod:`ipguard_tf.zoo.tafa_models`), a remote suspect's answers (:mod:`ipguard_tf.verification.remote`) and
the anti-piracy training epochs (:mod:`ipguard_tf.protect.training`).

:class:`SearchCheckpoint`: every :class:`~ipguard_tf.methods.search.AdamSearch` run (one batch of IPGuard
points, one binary-search step of CW-L2) is an *entry*, keyed by a SHA-256 of everything it starts from
(initial points, labels, constants, hyperparameters). While an entry runs, its whole state (points, per-point
Adam moments and step counts, best points, flags, the iteration counter) is saved every ``every`` seconds
between graph segments, and once more when it finishes. A resumed run recomputes the same entries in the same
order: finished ones are restored without computing, the interrupted one continues from its last saved segment,
so the result is the one an uninterrupted run gives (the same sequence of batch compositions, hence the same
arithmetic). Its state file holds the arrays of an entry as ``KEY/FIELD`` and the entries' scalars in the
index; its identity is the run's (model weights, method, hyperparameters, seed, n).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Type, Union

import numpy as np

from ipguard_tf.core.errors import IPGuardError, ParameterError
from ipguard_tf.io.files import atomic_write_bytes

log = logging.getLogger(__name__)

#: the schema of an extraction's checkpoint (2: stored as a :class:`StateFile`)
SCHEMA = "ipguard_tf.checkpoint/2"
#: the schema a :class:`StateFile` gets when its user names none
STATE_SCHEMA = "ipguard_tf.state/1"
#: the name of the archive member holding a state file's JSON index
INDEX = "__index__"

#: (arrays, scalars): what a :class:`StateFile` saves and loads
State = Tuple[Dict[str, np.ndarray], Dict[str, Any]]


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


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.generic, np.ndarray)):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} is not JSON-able")


def _plain(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, NumPy scalars Python numbers)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


class StateFile:
    """A file of resumable state: named arrays and JSON-able scalars, written atomically, tagged with the
    identity of the run that wrote it (see the module docstring).

    Args:
        path: the file (created by the first :meth:`save`).
        identity: what a saved state must match to be resumed (a string, or a JSON-able dict).
        what: the file's name in messages, e.g. ``"checkpoint"``, ``"progress file"``.
        schema: the kind of state; a file of another schema is refused as unreadable.
        other: what a file of another identity belongs to, in the message (e.g. ``"another run (model or seed
            differ)"``).
        hint: the alternative to deleting such a file, in the message (e.g. ``"choose another --checkpoint
            file"``).
        error: the :class:`~ipguard_tf.core.errors.IPGuardError` subclass of the one-line errors.
    """

    def __init__(
        self,
        path: Union[str, Path],
        identity: Union[str, Mapping[str, Any]],
        what: str = "checkpoint",
        *,
        schema: str = STATE_SCHEMA,
        other: str = "another run",
        hint: Optional[str] = None,
        error: Type[IPGuardError] = CheckpointError,
    ) -> None:
        self.path = Path(path)
        self.identity = _plain(identity)
        self.what = what
        self.schema = schema
        self.other = other
        self.hint = hint
        self.error = error

    def unreadable(self, reason: str) -> IPGuardError:
        """The one-line error for a file that cannot be resumed from (``reason``: why, a few words); callers
        raise it too when the saved arrays do not fit what they expect."""
        return self.error(f"{self.what} {self.path} is unreadable ({reason}); delete it to start afresh")

    def foreign(self) -> IPGuardError:
        """The one-line error for a file written by another run (another identity)."""
        alt = f", or {self.hint}" if self.hint else ""
        return self.error(f"{self.what} {self.path} belongs to {self.other}; delete it to start afresh{alt}")

    def exists(self) -> bool:
        """Whether the file exists."""
        return self.path.exists()

    def load(self) -> Optional[State]:
        """The saved (arrays, scalars), or None when the file does not exist. Raises :meth:`unreadable` or
        :meth:`foreign` (of the ``error`` class) for a file that cannot be resumed from."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
            raw = arrays.pop(INDEX)
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise ValueError("index")
            index = json.loads(raw.tobytes().decode("utf-8"))
            if not isinstance(index, dict) or not isinstance(index.get("scalars"), dict):
                raise ValueError("index")
        except Exception as exc:  # any damage (not a zip, truncated, pickled, no index): one line, never a trace
            raise self.unreadable(f"not a state file: {type(exc).__name__}") from None
        if index.get("schema") != self.schema:
            raise self.unreadable(f"schema {index.get('schema')!r}, expected {self.schema!r}")
        if index.get("identity") != self.identity:
            raise self.foreign()
        return arrays, index["scalars"]

    def save(self, arrays: Mapping[str, np.ndarray], scalars: Mapping[str, Any]) -> None:
        """Replace the file (atomically) by ``arrays`` (numeric, string or bool; no objects) and ``scalars``
        (JSON-able)."""
        out: Dict[str, np.ndarray] = {}
        for name, a in arrays.items():
            a = np.asarray(a)
            if name == INDEX or a.dtype.hasobject:
                raise ValueError(f"cannot store array {name!r} of dtype {a.dtype} in a state file")
            out[name] = a
        index = {"schema": self.schema, "identity": self.identity, "scalars": _plain(dict(scalars))}
        out[INDEX] = np.frombuffer(json.dumps(index).encode("utf-8"), np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **out)
        atomic_write_bytes(self.path, buf.getvalue())

    def remove(self) -> None:
        """Delete the file (nothing when it does not exist)."""
        self.path.unlink(missing_ok=True)


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
        self.file = StateFile(
            self.path,
            run_id,
            "checkpoint",
            schema=SCHEMA,
            other="another run (model, method, settings, seed or data differ)",
            hint="choose another --checkpoint file",
        )
        self._entries: Dict[str, State] = {}
        self._last_save = time.monotonic()
        self._lock = threading.Lock()
        saved = self.file.load()
        if saved is not None:
            arrays, scalars = saved
            entries = scalars.get("entries")
            if not isinstance(entries, dict) or not all(isinstance(s, dict) for s in entries.values()):
                raise self.file.unreadable("no entries")
            for key, sc in entries.items():
                fields = {name.split("/", 1)[1]: a for name, a in arrays.items() if name.startswith(key + "/")}
                self._entries[key] = (fields, sc)
            log.info("resuming from checkpoint %s (%d search run(s) saved)", self.path, len(self._entries))
        self.resumed = bool(self._entries)

    def get(self, key: str) -> Optional[State]:
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
        flat = {f"{key}/{name}": a for key, (arrays, _) in self._entries.items() for name, a in arrays.items()}
        self.file.save(flat, {"entries": {k: e[1] for k, e in self._entries.items()}})
        self._last_save = time.monotonic()
        log.debug("checkpoint saved: %s", self.path)

    def remove(self) -> None:
        """Delete the file (after the fingerprint has been written)."""
        self.file.remove()
