"""Untrusted suspect files: refuse what could run code when loaded, unless the user says ``--unsafe``.

A suspect model is, by the paper's threat model, someone else's file. Loading some model files runs code:

* Keras ``Lambda`` layers carry Python code (bytecode or a source string). Keras 3 refuses them in
  ``safe_mode`` (kept on), but tf_keras (Keras 2) loads them silently from ``.h5`` files and SavedModels;
* pickle-based files (``.pkl``, ``.pickle``, ``.joblib``) run arbitrary code by design;
* skops files are safe only while the types they name are trusted.

:func:`check_model_file` inspects a file *without loading it* (the Keras config is JSON inside the ``.keras``
zip, an attribute of the ``.h5`` file, or JSON documents in a SavedModel's ``keras_metadata.pb`` proto) and raises
:class:`UnsafeModelError` with an explanation; ``unsafe=True`` skips the check and turns Keras' safe mode off
for that one load (:func:`keras_safe_mode`), never for the process.
A SavedModel without Keras metadata is a TensorFlow graph (no Python code) and is allowed.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from pathlib import Path
from typing import Any, Iterator, List, Union

from ipguard_tf.core.errors import ModelError

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
_HINT = "re-run with --unsafe (unsafe=True) only if you trust the file's author"


class UnsafeModelError(ModelError):
    """A model file could run code when loaded and ``unsafe`` was not given."""


@contextlib.contextmanager
def keras_safe_mode(safe: bool) -> Iterator[None]:
    """Keras 3's and tf_keras' safe-mode flags set to ``safe`` for the block only, then restored (each library's
    own ``SafeModeScope``; both flags are thread-local). ``keras.config.enable_unsafe_deserialization()`` would
    switch Keras 3's flag off for the whole process, so that every later deserialisation (``model_from_json``,
    ``deserialize_keras_object``, the legacy ``.h5`` reader) ran Lambda code whatever ``safe_mode`` it was
    given. Setting the flag to True in safe loads also makes tf_keras' legacy ``.h5`` reader refuse Lambda
    layers, which it otherwise loads silently."""
    with contextlib.ExitStack() as stack:
        for module in ("keras.src.saving.serialization_lib", "tf_keras.src.saving.serialization_lib"):
            try:
                scope = __import__(module, fromlist=["SafeModeScope"]).SafeModeScope
            except (ImportError, AttributeError):  # another version: the loaders' own safe_mode argument remains
                continue
            stack.enter_context(scope(safe))
        yield


def _walk(cfg: Any) -> Iterator[dict]:
    if isinstance(cfg, dict):
        yield cfg
        for v in cfg.values():
            yield from _walk(v)
    elif isinstance(cfg, list):
        for v in cfg:
            yield from _walk(v)


def code_layers(config: Any) -> List[str]:
    """Names of the layers in a Keras model config whose deserialisation would run Python code."""
    found = []
    for d in _walk(config):
        if d.get("class_name") == "Lambda":
            found.append(str((d.get("config") or {}).get("name", "?")))
        elif d.get("class_name") in ("__lambda__", "__bytecode__"):
            found.append("<python function>")
    return found


def _keras_config(path: Path) -> Any:
    suffix = path.suffix.lower()
    if path.is_dir():
        meta = path / "keras_metadata.pb"
        if not meta.exists():
            return None  # a plain TensorFlow graph
        from google.protobuf.message import DecodeError
        from tf_keras.protobuf import saved_metadata_pb2

        proto = saved_metadata_pb2.SavedMetadata()
        try:
            proto.ParseFromString(meta.read_bytes())
            return [json.loads(node.metadata) for node in proto.nodes]  # one JSON document per saved object
        except (DecodeError, ValueError):  # (json.JSONDecodeError and UnicodeDecodeError are ValueErrors)
            raise ModelError(f"cannot load model {path}: its keras_metadata.pb is unreadable") from None
    if suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read("config.json").decode("utf-8"))
        except (zipfile.BadZipFile, KeyError, OSError, ValueError, UnicodeDecodeError):
            raise ModelError(f"cannot load model {path}: not a readable .keras file (no valid config.json)") from None
    if suffix in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(path, "r") as h:
                cfg = h.attrs.get("model_config")
        except OSError:
            raise ModelError(f"cannot load model {path}: not a readable HDF5 file") from None
        if cfg is None:
            return None  # weights only: nothing to deserialise
        try:
            return json.loads(cfg.decode("utf-8") if isinstance(cfg, bytes) else str(cfg))
        except ValueError:
            raise ModelError(f"{path}: its model_config is not valid JSON") from None
    return None


def check_model_file(path: Union[str, Path], unsafe: bool = False) -> None:
    """Raise :class:`UnsafeModelError` if loading ``path`` could run code (see the module docstring)."""
    if unsafe:
        return
    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeModelError(f"{p} is a pickle file: loading it runs arbitrary code; {_HINT}")
    layers = code_layers(_keras_config(p))
    if layers:
        raise UnsafeModelError(
            f"{p} contains Lambda layer(s) {', '.join(sorted(set(layers))[:5])} whose Python code "
            f"would run when loaded; {_HINT}"
        )


#: the types a skops file may name without ``unsafe`` (what the zoo's random forests need)
SKOPS_TRUSTED_PREFIXES = ("sklearn.ensemble.", "sklearn.tree.", "numpy.", "builtins.")


def load_skops(path: Union[str, Path], unsafe: bool = False):
    """Load a skops file, refusing any type outside scikit-learn's trees/ensembles and NumPy unless ``unsafe``
    (skops itself runs no code for the types it trusts)."""
    import skops.io as sio

    data = Path(path).read_bytes()
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ModelError(f"{path} is not a readable skops file ({type(exc).__name__})") from None
    bad = [t for t in untrusted if not t.startswith(SKOPS_TRUSTED_PREFIXES)]
    if bad and not unsafe:
        raise UnsafeModelError(
            f"{path} names types outside scikit-learn and NumPy ({', '.join(bad[:3])}), which "
            "could run code when loaded; re-run with --unsafe only if you trust its author"
        )
    return sio.loads(data, trusted=untrusted)
