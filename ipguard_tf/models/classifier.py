"""Model adapters: turn what a user has into "a float batch in [0, 1] -> logits" plus a batched label predictor.

Accepted (see :func:`as_classifier`):

* a Keras 3 model (``keras.Model``) or a Keras 2 model (``tf_keras.Model``; TF-MOT's pruned models are
  these), in memory;
* a path to a Keras 3 ``.keras`` file, a Keras 2 ``.h5`` file, a SavedModel directory, a TensorFlow Lite
  ``.tflite`` file (float or int8; run by the TFLite interpreter, see :mod:`ipguard_tf.models.tflite`: labels and
  scores, not differentiable) or an ``.onnx`` file (run by ONNX Runtime, NHWC or NCHW inputs, see
  :mod:`ipguard_tf.models.onnx`: labels and scores, not differentiable);
* a scikit-learn style estimator with ``predict`` (e.g. a random forest on flattened pixels): labels only;
* any Python callable on a float32 batch returning logits, probabilities or integer labels.

**Softmax heads.** IPGuard's objective (paper Eq. 5) is defined on the logits Z, but most saved classifiers end
in a softmax. For Keras models the adapter rebuilds the head without the activation, sharing the original
weights (the model passed in is never modified):

* last layer ``Softmax`` or ``Activation("softmax")``: the logits are that layer's input;
* last layer with ``activation="softmax"`` (e.g. ``Dense(10, activation="softmax")``): a copy of that layer with
  ``activation="linear"`` and the same weights is applied to the last layer's input.

When the head cannot be rebuilt (subclassed models, SavedModels without Keras metadata, plain callables) but
the outputs are probabilities, the adapter uses ``log(p)`` and logs a warning: ``log softmax(z) = z - lse(z)``
differs from the logits by a per-example constant, so every logit *difference* that Eq. 5, CW-L2 and the
cross-entropy use is exact, but saturated probabilities (p = 0 in float32) lose their gradient.

**Inputs.** Fingerprints live in ``[0, 1]^d`` (paper Section 5.1.4). A model trained on another scale takes
``input_scale`` (e.g. 255) and/or a ``preprocess`` function, applied inside the differentiable function.
Arrays given to the adapter are checked against the model's input shape and against ``[0, 1]``; a mismatch
raises :class:`~ipguard_tf.core.errors.ModelError` with one line saying what differs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from ipguard_tf.core.checks import check_number
from ipguard_tf.core.constants import DATA_MAX, DATA_MIN
from ipguard_tf.core.errors import ModelError, ParameterError
from ipguard_tf.models.onnx import ONNXModel, check_layout
from ipguard_tf.models.remote import RemoteSuspect
from ipguard_tf.models.safety import PICKLE_SUFFIXES, check_model_file, keras_safe_mode, load_skops
from ipguard_tf.models.tflite import TFLiteModel

log = logging.getLogger(__name__)

ModelLike = Any
DEFAULT_PREDICT_BATCH = 256


def _is_tf_keras_model(obj: Any) -> bool:
    return any(c.__module__.startswith("tf_keras") for c in type(obj).__mro__)


def _is_keras3_model(obj: Any) -> bool:
    return any(c.__module__.startswith("keras.") or c.__module__ == "keras" for c in type(obj).__mro__) and hasattr(
        obj, "layers"
    )


def _keras_module_of(model: Any):
    if _is_tf_keras_model(model):
        import tf_keras

        return tf_keras
    import keras

    return keras


def weights_sha256(model: Any) -> Optional[str]:
    """SHA-256 over the model's weight arrays (dtype, shape and bytes, in ``model.weights`` order)."""
    weights = getattr(model, "weights", None)
    if weights is None:
        return None
    h = hashlib.sha256()
    for w in weights:
        a = np.ascontiguousarray(np.asarray(w.numpy() if hasattr(w, "numpy") else w))
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def content_sha256(model: Any) -> str:
    """SHA-256 of what a model computes with, independent of the file container (whose zip entries carry
    timestamps): the weight arrays of a Keras model, the node and value arrays of a forest's trees, a TFLite
    model's flatbuffer or an ONNX model's file."""
    if hasattr(model, "content_sha256"):  # TFLite, ONNX
        return model.content_sha256
    if hasattr(model, "estimators_"):
        h = hashlib.sha256()
        for est in model.estimators_:
            st = est.tree_.__getstate__()
            for key in ("nodes", "values"):
                a = np.ascontiguousarray(st[key])
                h.update(a.tobytes())
        return h.hexdigest()
    return weights_sha256(model)


def _act_name(act: Any) -> str:
    if act is None:
        return ""
    if isinstance(act, str):
        return act
    return getattr(act, "__name__", type(act).__name__).lower()


def keras_logits_model(model: Any) -> Tuple[Any, str]:
    """Return (a model giving logits, a note on what was done) for a Keras 2 or Keras 3 model.

    The returned model shares the input model's layers and weights; the input model is never modified.
    """
    K = _keras_module_of(model)
    layers = getattr(model, "layers", None)
    if not layers:
        return model, "model has no layers list; outputs taken as they are"
    last = layers[-1]
    cls = type(last).__name__
    is_softmax_layer = cls == "Softmax" or (
        cls == "Activation" and _act_name(getattr(last, "activation", None)) == "softmax"
    )
    act = _act_name(getattr(last, "activation", None))
    if not is_softmax_layer and act != "softmax":
        return model, "no softmax head"
    try:
        inputs = model.inputs
        feat = last.input
    except Exception:  # subclassed / not built functionally
        return model, "softmax head could not be rebuilt (no functional graph)"
    if is_softmax_layer:
        return K.Model(inputs, feat, name=f"{model.name}_logits"), f"dropped final {cls} layer"
    cfg = last.get_config()
    cfg["activation"] = "linear"
    cfg["name"] = f"{last.name}_logits"
    head = type(last).from_config(cfg)
    out = head(feat)
    head.set_weights(last.get_weights())
    return K.Model(inputs, out, name=f"{model.name}_logits"), f"rebuilt {cls} head {last.name!r} with linear activation"


class Classifier:
    """A classifier as IPGuard sees it: a differentiable logits function on [0, 1] inputs and a label predictor.

    Build one with :func:`as_classifier`. ``logits(x)`` is a TensorFlow function of a float32 NHWC batch and
    is differentiable; ``predict_labels`` and ``predict_logits`` work on numpy arrays in batches.
    Label-only classifiers (``has_logits`` False) support only ``predict_labels`` (enough for Verify);
    non-differentiable ones with scores (a TFLite or ONNX model: ``output_fn``, ``output_kind`` "logits" or
    "probabilities") also ``predict_scores``.
    """

    def __init__(
        self,
        *,
        logits_fn: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
        label_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None,
        output_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None,
        output_kind: str = "logits",
        input_shape: Optional[Sequence[Optional[int]]] = None,
        num_classes: Optional[int] = None,
        name: str = "model",
        source: str = "",
        weights_sha256: Optional[str] = None,
        value_range: Tuple[float, float] = (DATA_MIN, DATA_MAX),
        resize_to: Optional[Tuple[int, int]] = None,
        batch_size: int = DEFAULT_PREDICT_BATCH,
        keras_model: Any = None,
        note: str = "",
    ) -> None:
        if logits_fn is None and label_fn is None and output_fn is None:
            raise ValueError("Classifier needs logits_fn, output_fn or label_fn")
        self._logits_fn = logits_fn
        self._label_fn = label_fn
        self._output_fn = output_fn
        self.output_kind = output_kind
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.num_classes = num_classes
        self.name = name
        self.source = source
        self.weights_sha256 = weights_sha256
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.resize_to = resize_to
        self.batch_size = int(batch_size)
        self.keras_model = keras_model
        self.note = note
        self._compiled = None
        self._graph_cache: dict = {}  # search graphs reused across generate() calls (see search.AdamSearch)

    # -- properties -------------------------------------------------------------------------------------
    @property
    def has_logits(self) -> bool:
        return self._logits_fn is not None

    @property
    def has_scores(self) -> bool:
        """Whether :meth:`predict_scores` works (logits, or a non-differentiable model's own outputs)."""
        return self._logits_fn is not None or self._output_fn is not None

    @property
    def scores_kind(self) -> str:
        """What :meth:`predict_scores` gives: ``"logits"``, or ``"probabilities"`` for a non-differentiable
        model whose outputs are probabilities (a TFLite or ONNX file ending in softmax)."""
        return "logits" if self._logits_fn is not None else self.output_kind

    def __repr__(self) -> str:
        return f"Classifier({self.name!r}, input_shape={self.input_shape}, classes={self.num_classes})"

    # -- differentiable path ----------------------------------------------------------------------------
    def logits(self, x: tf.Tensor) -> tf.Tensor:
        """Logits Z(x) of a float32 batch in [0, 1] (differentiable; usable inside ``tf.function``)."""
        if self._logits_fn is None:
            what = "only returns labels"
            if self._output_fn is not None:
                what = "is not differentiable (a TFLite or ONNX model)"
            raise ModelError(f"{self.name} {what}; this operation needs its logits as a TensorFlow function")
        if self.resize_to is not None and tuple(x.shape[1:3]) != tuple(self.resize_to):
            x = tf.image.resize(x, self.resize_to, method="bilinear")
        return self._logits_fn(x)

    def _forward(self):
        if self._compiled is None:
            self._compiled = tf.function(self.logits, reduce_retracing=True)
        return self._compiled

    # -- checks -----------------------------------------------------------------------------------------
    def check_inputs(self, x: np.ndarray, what: str = "inputs") -> np.ndarray:
        """Return ``x`` as float32 after checking its shape and value range; raise ModelError otherwise."""
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise ModelError(f"{what} must be numeric, got dtype {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if self.input_shape is not None:
            exp = self.input_shape
            got = tuple(x.shape[1:])
            ok = len(exp) == len(got) and all(e is None or e == g for e, g in zip(exp, got))
            if not ok and self.resize_to is not None and len(got) == 3 and len(exp) == 3 and got[2] == exp[2]:
                ok = True  # resized inside logits()
            if not ok:
                raise ModelError(f"{what} have shape {got} per example but {self.name} expects {tuple(exp)}")
        if x.size:
            lo, hi = float(np.min(x)), float(np.max(x))
            if not np.isfinite(lo) or not np.isfinite(hi):
                raise ModelError(f"{what} contain NaN or infinite values")
            vlo, vhi = self.value_range
            if lo < vlo - 1e-6 or hi > vhi + 1e-6:
                raise ModelError(
                    f"{what} lie in [{lo:.4g}, {hi:.4g}] but must lie in [{vlo:g}, {vhi:g}] "
                    f"(scale images to [0, 1]; give the model input_scale / --input-scale if it expects another range)"
                )
        return x

    # -- batched prediction -----------------------------------------------------------------------------
    def predict_logits(self, x: np.ndarray, batch_size: Optional[int] = None) -> np.ndarray:
        """Logits for a numpy batch, computed ``batch_size`` examples at a time."""
        x = self.check_inputs(x)
        bs = batch_size or self.batch_size
        f = self._forward()
        outs = [f(tf.constant(x[s : s + bs])).numpy() for s in range(0, len(x), bs)]
        if not outs:
            return np.zeros((0, self.num_classes or 0), np.float32)
        return np.concatenate(outs).astype(np.float32)

    def predict_scores(self, x: np.ndarray, batch_size: Optional[int] = None) -> np.ndarray:
        """Per-class scores for a numpy batch: the logits where the model gives them (``output_kind``
        "logits"), else the non-differentiable model's own outputs (probabilities or logits, see
        ``output_kind``). Label-only models raise ModelError."""
        if self._logits_fn is not None:
            return self.predict_logits(x, batch_size)
        if self._output_fn is None:
            raise ModelError(f"{self.name} only returns labels; this operation needs class scores")
        x = self.check_inputs(x)
        bs = batch_size or self.batch_size
        outs = [np.asarray(self._output_fn(x[s : s + bs]), np.float32) for s in range(0, len(x), bs)]
        return np.concatenate(outs) if outs else np.zeros((0, self.num_classes or 0), np.float32)

    def predict_labels(self, x: np.ndarray, batch_size: Optional[int] = None) -> np.ndarray:
        """Predicted labels (argmax of the logits, the label function's output where the model has its own, e.g.
        a forest's ``predict``, else the argmax of its outputs) as int64."""
        x = self.check_inputs(x)
        if self._logits_fn is not None:
            return np.argmax(self.predict_logits(x, batch_size), axis=1).astype(np.int64)
        if self._output_fn is not None and self._label_fn is None:
            return np.argmax(self.predict_scores(x, batch_size), axis=1).astype(np.int64)
        bs = batch_size or self.batch_size
        outs = [np.asarray(self._label_fn(x[s : s + bs])).reshape(-1) for s in range(0, len(x), bs)]
        return np.concatenate(outs).astype(np.int64) if outs else np.zeros((0,), np.int64)


# ---------------------------------------------------------------------------------------------------------
def _scaled(fn: Callable, input_scale: float, preprocess: Optional[Callable]) -> Callable:
    if input_scale == 1.0 and preprocess is None:
        return fn

    def wrapped(x):
        if input_scale != 1.0:
            x = x * input_scale
        if preprocess is not None:
            x = preprocess(x)
        return fn(x)

    return wrapped


def _model_input_shape(model: Any) -> Optional[tuple]:
    try:
        shp = model.inputs[0].shape
        return tuple(None if d is None else int(d) for d in shp[1:])
    except Exception:
        try:
            return tuple(model.input_shape[1:])
        except Exception:
            return None


def _model_num_classes(model: Any) -> Optional[int]:
    try:
        return int(model.outputs[0].shape[-1])
    except Exception:
        try:
            return int(model.output_shape[-1])
        except Exception:
            return None


def _from_keras(
    model: Any, *, name: Optional[str], source: str, input_scale: float, preprocess, resize_to, batch_size: int
) -> Classifier:
    lm, note = keras_logits_model(model)
    log.debug("%s: %s", model.name, note)
    if "could not be rebuilt" in note:
        log.warning("%s: %s; using log-probabilities as logits", model.name, note)

        def base(x):
            return tf.math.log(tf.maximum(lm(x, training=False), 1e-30))
    else:

        def base(x):
            return lm(x, training=False)

    return Classifier(
        logits_fn=_scaled(base, input_scale, preprocess),
        input_shape=_model_input_shape(model),
        num_classes=_model_num_classes(model),
        name=name or model.name,
        source=source,
        weights_sha256=weights_sha256(model),
        resize_to=resize_to,
        batch_size=batch_size,
        keras_model=model,
        note=note,
    )


def _probe_kind(out: np.ndarray) -> str:
    out = np.asarray(out)
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1 and out.dtype.kind in "iu"):
        return "labels"
    if out.ndim == 2 and out.dtype.kind == "f" and np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return "probs"
    return "logits"


def _from_callable(
    fn: Callable, *, output: str, input_shape, num_classes, name, source, input_scale, preprocess, resize_to, batch_size
) -> Classifier:
    if output == "auto":
        if input_shape is None:
            raise ModelError("a plain callable needs input_shape (or output='labels'/'logits'/'probs') to be probed")
        probe = np.random.default_rng(0).random((2,) + tuple(input_shape), dtype=np.float32)
        out = fn(probe * input_scale if preprocess is None else preprocess(probe * input_scale))
        out = out.numpy() if hasattr(out, "numpy") else np.asarray(out)
        output = _probe_kind(out)
        if num_classes is None and output != "labels":
            num_classes = int(out.shape[-1])
        if output == "probs":
            log.warning("%s returns probabilities; using log-probabilities as logits", name or "callable")
    if output == "labels":

        def label_fn(x):
            out = fn(x * input_scale if preprocess is None else preprocess(x * input_scale))
            return out.numpy() if hasattr(out, "numpy") else np.asarray(out)

        return Classifier(
            label_fn=label_fn,
            input_shape=input_shape,
            num_classes=num_classes,
            name=name or getattr(fn, "__name__", "callable"),
            source=source,
            batch_size=batch_size,
        )
    if output == "probs":

        def base(x):
            return tf.math.log(tf.maximum(tf.convert_to_tensor(fn(x)), 1e-30))
    elif output == "logits":

        def base(x):
            return tf.convert_to_tensor(fn(x))
    else:
        raise ParameterError(f"output must be auto, logits, probs or labels, not {output!r}")
    return Classifier(
        logits_fn=_scaled(base, input_scale, preprocess),
        input_shape=input_shape,
        num_classes=num_classes,
        name=name or getattr(fn, "__name__", "callable"),
        source=source,
        resize_to=resize_to,
        batch_size=batch_size,
    )


def _from_sklearn(est: Any, *, input_shape, name, source, batch_size) -> Classifier:
    """Labels from ``est.predict``; class scores, where the estimator has ``predict_proba`` (a random forest:
    the trees' mean class probabilities), as probabilities in the columns of the labels ``classes_`` names (for
    SAC's correlation, which needs scores)."""

    def label_fn(x):
        return est.predict(x.reshape(len(x), -1))

    classes = np.asarray(getattr(est, "classes_", []))
    n_classes = len(classes) or None
    output_fn = None
    if hasattr(est, "predict_proba") and n_classes and np.issubdtype(classes.dtype, np.integer) and classes.min() >= 0:
        width = int(classes.max()) + 1

        def output_fn(x):
            p = est.predict_proba(x.reshape(len(x), -1))
            out = np.zeros((len(x), width), np.float32)
            out[:, classes] = p
            return out

        n_classes = width
    return Classifier(
        label_fn=label_fn,
        output_fn=output_fn,
        output_kind="probabilities",
        input_shape=input_shape,
        num_classes=n_classes,
        name=name or type(est).__name__,
        source=source,
        batch_size=batch_size,
    )


def _numpy_outputs(model: Callable, input_scale: float, preprocess: Optional[Callable]) -> Callable:
    """The outputs of a model run outside TensorFlow (TFLite, ONNX) on [0, 1] inputs scaled and preprocessed."""

    def output_fn(x):
        if input_scale != 1.0:
            x = x * input_scale
        if preprocess is not None:
            x = np.asarray(preprocess(x))
        return model(x)

    return output_fn


def _from_tflite(model, *, name, source, input_scale, preprocess, batch_size) -> Classifier:
    return Classifier(
        output_fn=_numpy_outputs(model, input_scale, preprocess),
        output_kind=model.output_kind,
        input_shape=model.input_shape,
        num_classes=model.num_classes,
        name=name or model.name,
        source=source,
        weights_sha256=model.content_sha256,
        batch_size=batch_size,
        note=f"TFLite {model.input_dtype.name} input, {model.output_kind} output",
    )


def _from_onnx(model, *, name, source, input_scale, preprocess, batch_size) -> Classifier:
    """A Classifier on an :class:`~ipguard_tf.models.onnx.ONNXModel`. Its output kind is the graph's (a
    ``Softmax`` node: probabilities); where the graph says logits and the input's dimensions are all fixed, the
    outputs on two random inputs are probed as a callable's are (:func:`_probe_kind`), and the model's
    ``output_kind`` set to what they show."""
    dims = model.static_input()
    if model.output_kind == "logits" and dims is not None:
        probe = np.random.default_rng(0).random(dims, dtype=np.float32) * input_scale
        if _probe_kind(np.asarray(model.raw(probe), np.float32).reshape(len(probe), -1)) == "probs":
            model.output_kind = "probabilities"
    return Classifier(
        output_fn=_numpy_outputs(model, input_scale, preprocess),
        output_kind=model.output_kind,
        input_shape=None,  # checked by the model itself, whose errors name the layout (model.input_shape: NHWC view)
        num_classes=model.num_classes,
        name=name or model.name,
        source=source,
        weights_sha256=model.content_sha256,
        batch_size=batch_size,
        note=f"ONNX {model.input_dtype.name} input, layout {model.layout}, {model.output_kind} output",
    )


def load_model_file(
    path: Union[str, Path], custom_objects: Optional[dict] = None, unsafe: bool = False, *, layout: str = "auto"
) -> Any:
    """Load a ``.keras`` file, an ``.h5`` file or a SavedModel directory into a Keras (2 or 3) model, a
    ``.skops`` file into a scikit-learn estimator, a ``.tflite`` file into a
    :class:`~ipguard_tf.models.tflite.TFLiteModel` or an ``.onnx`` file into an
    :class:`~ipguard_tf.models.onnx.ONNXModel` (``layout``: its input layout, ``auto``, ``NHWC`` or ``NCHW``;
    other formats ignore it).

    Suspect files are untrusted (see :mod:`ipguard_tf.models.safety`): a file whose loading could run code (Keras
    ``Lambda`` layers, pickles, skops files naming types outside scikit-learn/NumPy) is refused with
    :class:`~ipguard_tf.models.safety.UnsafeModelError` unless ``unsafe`` is True; Keras' ``safe_mode`` stays on
    otherwise. ``unsafe`` applies to this one load only (:func:`~ipguard_tf.models.safety.keras_safe_mode`): later loads
    in the same process are as safe as ever.

    ``.keras`` is read with Keras 3 (falling back to tf_keras for Keras 2 ``.keras`` files); ``.h5`` with
    tf_keras first (its native Keras 2 format) and then Keras 3's legacy reader; a SavedModel directory with
    tf_keras (Keras 2 SavedModels carry their Keras metadata), else as a raw ``tf.saved_model`` whose
    ``serving_default`` signature is wrapped as a callable.
    """

    p = Path(path)
    check_layout(layout)
    if not p.exists():
        raise ModelError(f"model file {p} does not exist")
    check_model_file(p, unsafe)
    suffix = p.suffix.lower()
    if suffix == ".skops":
        return load_skops(p, unsafe=unsafe)
    if suffix == ".tflite":
        return TFLiteModel(p, unsafe=unsafe)
    if suffix == ".onnx":
        return ONNXModel(p, layout=layout)
    if suffix in PICKLE_SUFFIXES:  # only with unsafe=True (check_model_file refuses them otherwise)
        import joblib

        return joblib.load(p)
    if not p.is_dir() and suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelError(
            f"{p}: unknown model format (expected .keras, .h5, .tflite, .onnx, .skops or a SavedModel folder)"
        )
    if p.is_dir() and not (p / "saved_model.pb").exists():
        raise ModelError(f"{p} is a folder but not a SavedModel (no saved_model.pb)")
    with keras_safe_mode(not unsafe):  # this load only: never a process-wide switch
        return _load_keras_file(p, custom_objects, safe=not unsafe)


def _load_keras_file(p: Path, custom_objects: Optional[dict], safe: bool) -> Any:
    errors = []
    if p.is_dir():
        try:
            import tf_keras

            loaded = tf_keras.models.load_model(str(p), compile=False, custom_objects=custom_objects, safe_mode=safe)
            if _is_tf_keras_model(loaded):
                return loaded
            errors.append("tf_keras: no Keras metadata")
        except Exception as exc:  # no Keras metadata: raw SavedModel
            errors.append(f"tf_keras: {exc}")
        try:
            return _RawSavedModel(str(p))
        except Exception as exc:
            errors.append(f"tf.saved_model: {exc}")
    else:
        import keras

        def k3():
            return keras.saving.load_model(str(p), compile=False, custom_objects=custom_objects, safe_mode=safe)

        def k2():
            import tf_keras

            return tf_keras.models.load_model(str(p), compile=False, custom_objects=custom_objects, safe_mode=safe)

        for loader in (k3, k2) if p.suffix.lower() == ".keras" else (k2, k3):
            try:
                return loader()
            except Exception as exc:
                errors.append(
                    f"{loader.__name__}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                )
    raise ModelError(f"cannot load model {p}: " + "; ".join(errors)[:400])


class _RawSavedModel:
    """A SavedModel without Keras metadata, called through its ``serving_default`` signature."""

    def __init__(self, path: str) -> None:
        self._obj = tf.saved_model.load(path)
        sig = self._obj.signatures.get("serving_default")
        if sig is None:
            raise ModelError(f"SavedModel {path} has no serving_default signature")
        self._sig = sig
        ((self._in_name, spec),) = sig.structured_input_signature[1].items()
        self.input_shape = tuple(None if d is None else int(d) for d in spec.shape[1:])
        self.name = Path(path).name
        self.weights = list(self._obj.variables) if hasattr(self._obj, "variables") else None

    def __call__(self, x):
        out = self._sig(**{self._in_name: tf.convert_to_tensor(x, tf.float32)})
        if len(out) != 1:
            raise ModelError(f"SavedModel {self.name} has {len(out)} outputs; expected one")
        return next(iter(out.values()))


def as_classifier(
    model: ModelLike,
    *,
    output: str = "auto",
    input_shape: Optional[Sequence[int]] = None,
    num_classes: Optional[int] = None,
    input_scale: float = 1.0,
    preprocess: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
    resize_to: Optional[Tuple[int, int]] = None,
    name: Optional[str] = None,
    batch_size: int = DEFAULT_PREDICT_BATCH,
    custom_objects: Optional[dict] = None,
    unsafe: bool = False,
    layout: str = "auto",
) -> Classifier:
    """Adapt ``model`` (Keras 2/3 model, model file path, scikit-learn estimator or callable) to a Classifier; a
    :class:`~ipguard_tf.models.remote.RemoteSuspect` is returned as it is (it answers through the same interface).

    ``output`` says what a plain callable returns (``auto`` probes it on two random inputs); ``input_scale``
    and ``preprocess`` map [0, 1] inputs to what the model expects; ``resize_to`` (H, W) resizes inputs
    bilinearly first (paper Section 5.1.2 resizes fingerprints to each suspect's input size). ``unsafe``
    allows model files whose loading could run code (see :func:`load_model_file`); ``layout`` is the input layout
    of an ``.onnx`` file (``auto``, ``NHWC`` or ``NCHW``, see :mod:`ipguard_tf.models.onnx`).
    """
    if isinstance(model, (Classifier, RemoteSuspect)):  # a remote suspect answers through the same interface
        return model
    check_number(input_scale, "input_scale", 0.0, low_open=True)
    source = ""
    if isinstance(model, (str, os.PathLike)):
        source = str(model)
        name = name or Path(model).name
        model = load_model_file(model, custom_objects, unsafe=unsafe, layout=layout)

    if isinstance(model, TFLiteModel):
        return _from_tflite(
            model, name=name, source=source, input_scale=input_scale, preprocess=preprocess, batch_size=batch_size
        )
    if isinstance(model, ONNXModel):
        return _from_onnx(
            model, name=name, source=source, input_scale=input_scale, preprocess=preprocess, batch_size=batch_size
        )
    if isinstance(model, _RawSavedModel):
        input_shape = input_shape or model.input_shape
        c = _from_callable(
            model,
            output=output,
            input_shape=input_shape,
            num_classes=num_classes,
            name=name,
            source=source,
            input_scale=input_scale,
            preprocess=preprocess,
            resize_to=resize_to,
            batch_size=batch_size,
        )
        c.weights_sha256 = weights_sha256(model)
        return c
    if _is_tf_keras_model(model) or _is_keras3_model(model):
        plain = input_scale == 1.0 and preprocess is None and resize_to is None and not source
        if plain:  # one adapter per in-memory model, so its traced graphs are reused across calls
            cached = model.__dict__.get("_ipguard_adapter")
            if cached is not None and (name is None or cached.name == name) and cached.batch_size == batch_size:
                return cached
        clf = _from_keras(
            model,
            name=name,
            source=source,
            input_scale=input_scale,
            preprocess=preprocess,
            resize_to=resize_to,
            batch_size=batch_size,
        )
        if plain:  # kept on the model itself (a plain attribute, not tracked by Keras): freed with the model
            object.__setattr__(model, "_ipguard_adapter", clf)
        return clf
    if hasattr(model, "predict") and hasattr(model, "fit") and not callable(getattr(model, "call", None)):
        return _from_sklearn(model, input_shape=input_shape, name=name, source=source, batch_size=batch_size)
    if callable(model):
        return _from_callable(
            model,
            output=output,
            input_shape=input_shape,
            num_classes=num_classes,
            name=name,
            source=source,
            input_scale=input_scale,
            preprocess=preprocess,
            resize_to=resize_to,
            batch_size=batch_size,
        )
    raise ModelError(f"cannot use an object of type {type(model).__name__} as a classifier")


def save_keras_atomic(model, path: Path) -> None:
    """Save a Keras 3 model to ``path`` (.keras) without ever leaving a half-written file there.

    The optimizer state is not saved (an uncompiled copy with the same weights is written): it would triple
    the file size and plays no part in fingerprinting or verification."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if getattr(model, "optimizer", None) is not None:
        clone = type(model).from_config(model.get_config())  # uncompiled (clone_model keeps the optimizer)
        clone.set_weights(model.get_weights())
        model = clone
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=str(path.parent))
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
