"""The fingerprint file: a checked NumPy ``.npz`` archive (:mod:`ipguard_tf.io.checked_file`; read with
``allow_pickle=False``: loading it cannot run code) holding the per-point arrays of a
:class:`~ipguard_tf.core.fingerprint.Fingerprint`, the metadata as UTF-8 JSON, and a SHA-256 over all of it. It is
written atomically (temporary file in the same folder, fsync, rename). :func:`load_fingerprint` rejects a
truncated, altered or wrong-schema file with :class:`~ipguard_tf.core.errors.FingerprintFileError`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Union

import numpy as np

from ipguard_tf.core.errors import FingerprintFileError
from ipguard_tf.core.fingerprint import OPTIONAL_FIELDS, POINT_FIELDS, SCHEMA, Fingerprint, check_points
from ipguard_tf.io.checked_file import read_checked_npz, write_checked_npz

log = logging.getLogger(__name__)


def save_fingerprint(fp: Fingerprint, path: Union[str, Path]) -> str:
    """Write ``fp`` to ``path`` (``.npz``) atomically; return the content SHA-256."""
    digest = write_checked_npz(path, fp.arrays(), fp.metadata, SCHEMA)
    log.info("wrote fingerprint %s (%d points, sha256 %s)", path, len(fp), digest[:12])
    return digest


def load_fingerprint(path: Union[str, Path]) -> Fingerprint:
    """Read and check a fingerprint file; any problem raises FingerprintFileError with one line."""
    path = Path(path)
    arrays, meta, stored = read_checked_npz(path, SCHEMA, FingerprintFileError, "fingerprint", required=POINT_FIELDS)
    arrays = {k: v for k, v in arrays.items() if k in POINT_FIELDS or k in OPTIONAL_FIELDS}
    for k, dt in {**POINT_FIELDS, **OPTIONAL_FIELDS}.items():
        if k in arrays and arrays[k].dtype != np.dtype(dt):
            raise FingerprintFileError(f"{path}: field {k!r} has dtype {arrays[k].dtype}, expected {np.dtype(dt)}")
    try:
        fp = Fingerprint(**arrays, metadata=meta, sha256=stored)
    except ValueError as exc:
        raise FingerprintFileError(f"{path}: {exc}") from None
    problem = check_points(fp)
    if problem:
        raise FingerprintFileError(f"{path}: {problem}")
    return fp
