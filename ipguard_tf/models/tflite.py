"""TensorFlow Lite suspects and quantized copies (issue 14: a mobile app's ``.tflite`` file is the most common
deployment of a stolen model outside a server).

**Running a ``.tflite`` suspect** (:class:`TFLiteModel`): the TFLite interpreter, batched by resizing the input
tensor's batch dimension once to the batch size (a last, shorter batch is padded with zeros and the padding's
rows dropped; every TFLite kernel computes rows independently, so the other rows' outputs are unchanged).
Integer (int8/uint8) inputs are quantised from the tensor's own parameters, ``q = round(x / scale) + zero_point``
clipped to the type's range, the rule TFLite's converter uses for its representative data; integer outputs are
dequantised as ``(q - zero_point) * scale``. The label is the arg-max of the output (ties: the first index, as
``np.argmax`` on the raw integer output would give, since dequantisation is increasing).

**Trust.** A ``.tflite`` file is a FlatBuffer of operators and tensors: loading it runs no Python, and TFLite's
builtin kernels only compute on tensors. Two kinds of operator fall outside that: custom operators (the
interpreter has no kernel for them and cannot run the file) and Select-TensorFlow ("Flex") operators, which run
full TensorFlow kernels through the Flex delegate. A file with either is refused unless ``unsafe`` is given.

**Quantized copies** (:func:`convert`): TensorFlow's converter from a Keras 3 or tf_keras model to float32,
float16 (weights stored as float16, computed in float32) or full-integer int8 (weights and activations int8,
int8 input and output, calibrated on a representative dataset). These are what a thief shipping a mobile app
would run; they are post-processing attacks (see :func:`ipguard_tf.zoo.postprocess.quantize`).

The outputs are not differentiable: a TFLite model can be a suspect (labels, scores) but not the target of a
gradient-based fingerprint.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np

from ipguard_tf.core.errors import ModelError, ParameterError
from ipguard_tf.io.files import atomic_write_bytes
from ipguard_tf.models.safety import _HINT as _UNSAFE_HINT
from ipguard_tf.models.safety import UnsafeModelError

log = logging.getLogger(__name__)

#: quantisation modes of :func:`convert`
MODES = ("float32", "float16", "int8")
#: how many representative examples int8 calibration uses at most (TF's guide: "around 100-500")
DEFAULT_CALIBRATION_EXAMPLES = 500
#: TFLite ops that only move, reshape or (de)quantise data: looked through to find the op that made the output
_PASS_THROUGH = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "IDENTITY"}


class TFLiteUnsafeError(UnsafeModelError):
    """A .tflite file uses operators outside TFLite's builtin set and ``unsafe`` was not given."""


def _interpreter_class():
    """``ai_edge_litert``'s interpreter where installed (TF's successor), else ``tf.lite.Interpreter``."""
    try:  # pragma: no cover - not installed here
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter


class TFLiteModel:
    """A ``.tflite`` model (a file or its bytes) as a callable: float32 batch in the model's input scale ->
    float32 outputs (dequantised). ``labels(x)`` gives the arg-max.

    ``output_kind`` is ``"probabilities"`` when the output comes from a SOFTMAX operator (looked through
    (de)quantise and reshape operators), else ``"logits"``.
    """

    def __init__(
        self,
        source: Union[str, os.PathLike, bytes],
        *,
        name: Optional[str] = None,
        batch_size: int = 256,
        unsafe: bool = False,
        num_threads: Optional[int] = None,
    ) -> None:
        if batch_size < 1:
            raise ParameterError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(source, (bytes, bytearray)):
            content, self.path = bytes(source), None
        else:
            self.path = Path(source)
            if not self.path.is_file():
                raise ModelError(f"model file {self.path} does not exist")
            content = self.path.read_bytes()
        self.name = name or (self.path.name if self.path else "tflite")
        if len(content) < 8 or content[4:8] != b"TFL3":
            raise ModelError(f"{self.name} is not a TensorFlow Lite file (no TFL3 identifier)")
        self.content = content
        Interpreter = _interpreter_class()
        with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice in favour of ai_edge_litert
            warnings.simplefilter("ignore")
            try:
                self._it = Interpreter(model_content=content, num_threads=num_threads)
            except Exception as exc:  # a damaged flatbuffer or unknown ops
                raise ModelError(f"cannot load TFLite model {self.name}: {str(exc).splitlines()[0][:200]}") from None
        ops = self._ops()
        foreign = sorted(
            {
                o["op_name"]
                for o in ops
                if o["op_name"].startswith("Flex") or o["op_name"] == "CUSTOM" or not o["op_name"].isupper()
            }
        )
        if foreign and not unsafe:
            raise TFLiteUnsafeError(
                f"{self.name} uses operators outside TFLite's builtin set ({', '.join(foreign)[:120]}), "
                f"which run TensorFlow kernels or code not in TFLite; {_UNSAFE_HINT}"
            )
        inputs, outputs = self._it.get_input_details(), self._it.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.name} has {len(inputs)} inputs and {len(outputs)} outputs; expected one of each")
        self._in, self._out = inputs[0], outputs[0]
        sig = self._in.get("shape_signature")
        shape = list(sig if sig is not None and len(sig) else self._in["shape"])
        self.input_shape = tuple(None if int(d) < 0 else int(d) for d in shape[1:])
        self.fixed_batch = int(shape[0]) if int(shape[0]) > 0 and (sig is None or int(sig[0]) > 0) else None
        self.input_dtype = np.dtype(self._in["dtype"])
        self.output_dtype = np.dtype(self._out["dtype"])
        self.num_classes = int(self._out["shape"][-1])
        self.output_kind = "probabilities" if self._producer_op(ops) == "SOFTMAX" else "logits"
        self.batch_size = int(batch_size)
        self._allocated: Optional[int] = None
        self.weights = None  # weights_sha256() of a TFLite model: see content_sha256

    # -- inspection -------------------------------------------------------------------------------------------
    def _ops(self) -> List[dict]:
        try:
            return list(self._it._get_ops_details())
        except Exception:  # pragma: no cover - API moved
            return []

    def _producer_op(self, ops: List[dict]) -> str:
        """Name of the op that computes the output, looking through (de)quantise/reshape ops."""
        by_output = {int(t): o for o in ops for t in o.get("outputs", [])}
        tensor, seen = int(self._out["index"]), set()
        while tensor in by_output and tensor not in seen:
            seen.add(tensor)
            op = by_output[tensor]
            if op["op_name"] not in _PASS_THROUGH or not len(op.get("inputs", [])):
                return op["op_name"]
            tensor = int(op["inputs"][0])
        return ""

    @property
    def content_sha256(self) -> str:
        import hashlib

        return hashlib.sha256(self.content).hexdigest()

    # -- running ------------------------------------------------------------------------------------------------
    def _allocate(self, n: int) -> None:
        if self._allocated == n:
            return
        if self.fixed_batch is None or n != self.fixed_batch:
            try:
                self._it.resize_tensor_input(self._in["index"], [n, *self._in["shape"][1:]], strict=False)
            except Exception as exc:
                raise ModelError(f"{self.name}: cannot resize its input to a batch of {n}: {exc}") from None
        self._it.allocate_tensors()
        self._allocated = n

    def _quantise(self, x: np.ndarray) -> np.ndarray:
        if self.input_dtype.kind == "f":
            return x.astype(self.input_dtype, copy=False)
        scale, zero = self._in["quantization"]
        if not scale:
            raise ModelError(f"{self.name} takes {self.input_dtype} inputs without quantisation parameters")
        info = np.iinfo(self.input_dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self.input_dtype)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The interpreter's own output for one batch of already quantised (or float) inputs, unconverted."""
        x = np.asarray(x)
        self._allocate(len(x))
        self._it.set_tensor(self._in["index"], x)
        self._it.invoke()
        return self._it.get_tensor(self._out["index"]).copy()

    def _dequantise(self, q: np.ndarray) -> np.ndarray:
        if self.output_dtype.kind == "f":
            return q.astype(np.float32, copy=False)
        scale, zero = self._out["quantization"]
        if not scale:
            raise ModelError(f"{self.name} gives {self.output_dtype} outputs without quantisation parameters")
        return ((q.astype(np.float32) - zero) * scale).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Dequantised float32 outputs for a float batch (in the scale the model was converted for)."""
        x = np.asarray(x, np.float32)
        got = tuple(x.shape[1:])
        if len(got) != len(self.input_shape) or any(e is not None and e != g for e, g in zip(self.input_shape, got)):
            raise ModelError(
                f"inputs have shape {tuple(x.shape[1:])} per example but {self.name} expects {self.input_shape}"
            )
        bs = self.fixed_batch or self.batch_size
        outs = []
        for s in range(0, len(x), bs):
            chunk = self._quantise(x[s : s + bs])
            n = len(chunk)
            if n < bs and (self.fixed_batch is not None or self._allocated == bs or len(x) > bs):
                chunk = np.concatenate([chunk, np.zeros((bs - n,) + chunk.shape[1:], chunk.dtype)])
            outs.append(self._dequantise(self.raw(chunk))[:n])
        if not outs:
            return np.zeros((0, self.num_classes), np.float32)
        return np.concatenate(outs)

    def labels(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self(x), axis=1).astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"TFLiteModel({self.name!r}, input {self.input_dtype.name}{self.input_shape}, "
            f"output {self.output_dtype.name} {self.output_kind})"
        )


# ------------------------------------------------------------------------------------------------------------
def _representative(x: np.ndarray, limit: int):
    def gen():
        for i in range(min(limit, len(x))):
            yield [x[i : i + 1].astype(np.float32)]

    return gen


def convert(
    model: Any,
    mode: str = "float32",
    representative: Optional[np.ndarray] = None,
    *,
    calibration_examples: int = DEFAULT_CALIBRATION_EXAMPLES,
) -> bytes:
    """TFLite bytes of a Keras 3 or tf_keras ``model`` (TensorFlow's ``TFLiteConverter.from_keras_model``).

    ``mode``: ``float32`` (plain conversion), ``float16`` (post-training float16 quantisation of the weights),
    ``int8`` (full-integer post-training quantisation: int8 weights, activations, input and output, calibrated on
    the first ``calibration_examples`` rows of ``representative``, inputs as the model takes them). The model is
    not modified.
    """
    import tensorflow as tf

    if mode not in MODES:
        raise ParameterError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "int8":
        if representative is None or len(representative) == 0:
            raise ParameterError("int8 quantisation needs a representative dataset (inputs as the model takes them)")
        if calibration_examples < 1:
            raise ParameterError(f"calibration_examples must be at least 1, got {calibration_examples}")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = _representative(np.asarray(representative), calibration_examples)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    printed = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):  # Keras' export prints its signature
        warnings.simplefilter("ignore")
        try:
            return bytes(conv.convert())
        except Exception as exc:
            raise ModelError(f"TFLite conversion ({mode}) failed: {str(exc).strip().splitlines()[-1][:300]}") from None


def save(content: bytes, path: Union[str, os.PathLike]) -> Path:
    """Write TFLite bytes atomically."""

    p = Path(path)
    atomic_write_bytes(p, content)
    return p
