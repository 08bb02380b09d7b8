"""The anti-piracy key file: the transform's key, parameters and values, kept apart from the model.

A key file is a checked ``.npz`` (:mod:`ipguard_tf.io.checked_file`: arrays + JSON metadata + SHA-256, written
atomically), the same format as fingerprints under its own schema. It never goes inside the model file: the
model alone is what a thief copies, and it is useless on raw inputs. The metadata names the transform (kind,
key, parameters), the training settings and the content SHA-256 of the protected model it belongs to, so that
:func:`check_model` can refuse a key used with another model. A missing, truncated, altered or foreign file is
a :class:`KeyFileError` with one line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ipguard_tf.core.errors import IPGuardError, ParameterError
from ipguard_tf.io.checked_file import read_checked_npz, write_checked_npz
from ipguard_tf.models.classifier import content_sha256
from ipguard_tf.protect.transforms import CLASSES, Transform

log = logging.getLogger(__name__)

SCHEMA = "ipguard_tf.antipiracy_key/1"


class KeyFileError(IPGuardError):
    """An anti-piracy key file is missing, truncated, altered, of another schema or for another model."""


def save_key(
    transform: Transform,
    path: Union[str, Path],
    *,
    model_sha256: Optional[str] = None,
    extra: Optional[Dict[str, Any]] = None,
) -> str:
    """Write ``transform`` to ``path`` atomically (with ``model_sha256``, the protected model's content hash,
    and ``extra`` metadata such as the training settings); return the file's SHA-256."""
    meta = {"transform": transform.params(), "model_sha256": model_sha256, **(extra or {})}
    sha = write_checked_npz(path, transform.arrays(), meta, SCHEMA)
    log.info("wrote anti-piracy key %s (%s, sha256 %s)", path, transform.kind, sha[:12])
    return sha


def load_key(path: Union[str, Path]) -> Tuple[Transform, Dict[str, Any]]:
    """Read and check a key file: ``(transform, metadata)``; any problem is a one-line :class:`KeyFileError`."""
    arrays, meta, _ = read_checked_npz(path, SCHEMA, KeyFileError, "anti-piracy key")
    params = meta.get("transform")
    if not isinstance(params, dict) or params.get("kind") not in CLASSES:
        raise KeyFileError(f"{path}: no known transform in the key file's metadata")
    try:
        transform = CLASSES[params["kind"]].from_arrays(params, arrays)
    except (KeyError, TypeError, ValueError, ParameterError) as exc:
        raise KeyFileError(f"{path}: the {params['kind']} transform cannot be rebuilt ({exc})") from None
    return transform, meta


def check_model(meta: Dict[str, Any], model: Any, path: Union[str, Path] = "key") -> None:
    """Refuse (:class:`KeyFileError`) a key whose recorded model hash is not ``model``'s content hash."""
    want = meta.get("model_sha256")
    if not want:
        return

    have = content_sha256(model)
    if have != want:
        raise KeyFileError(
            f"{path} belongs to the model with content SHA-256 {want[:12]}..., not to this one ({have[:12]}...)"
        )
