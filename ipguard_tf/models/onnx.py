"""ONNX suspects: a stolen model converted to ``.onnx`` (tf2onnx, ``torch.onnx``, ...) and served through
ONNX Runtime, verified like a ``.tflite`` suspect (:mod:`ipguard_tf.models.tflite`).

**Running an ``.onnx`` suspect** (:class:`ONNXModel`): an ``onnxruntime.InferenceSession`` on the file's bytes
with ONNX Runtime's available execution providers, in its own order of preference (no device is chosen here;
the Azure provider, whose operators call remote endpoints, is left out). Points are float32 NHWC batches in the
model's input scale; they are cast to the input's float type (float, float16 or double) and, for a model that
takes NCHW inputs, transposed. A fixed batch dimension runs the points that many at a time (a last, shorter batch
is padded with zeros and the padding's rows dropped: rows are computed independently), a symbolic one in batches
of ``batch_size``. The label is the arg-max of the output.

**Layout** (``layout``): ``NHWC`` or ``NCHW`` as given, or ``auto``: the input's declared dimensions (integers,
or symbolic names where the exporter left a dimension free) are compared with the points' shape per example
(H, W, C). If only NHWC fits, the points go in as they are; if only NCHW (C, H, W) fits, they are transposed;
if both fit (symbolic spatial dimensions, or H == W == C), the model is ambiguous and :class:`ModelError` asks for
``--layout NHWC|NCHW``; if neither fits, the error names the model's input dimensions and the points' shape.

**Output kind**: ``"probabilities"`` when the output is computed by a ``Softmax`` node (looked through
reshape, cast, identity and (de)quantise nodes, as for TFLite), else ``"logits"``;
:func:`ipguard_tf.models.classifier.as_classifier` also probes the outputs of a model with fixed input
dimensions on random inputs, as it probes a plain callable.

**Trust.** An ONNX file is a protobuf of operators and tensors: loading it runs no Python, and ONNX Runtime only
runs its own kernels (a node of an unknown domain or operator makes the file unreadable rather than running
anything). The session is built from the file's bytes, so ONNX Runtime refuses tensors stored outside the file
("external data"): a suspect cannot read other files on this machine.

The outputs are not differentiable: an ONNX model can be a suspect (labels, scores) but not the target of a
gradient-based fingerprint. ``onnxruntime`` is needed to run one (``pip install onnxruntime``); the ``onnx``
package, where installed, is used to find the node that computes the output.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ipguard_tf.core.errors import ModelError, ParameterError

#: the input layouts :class:`ONNXModel` takes (``auto``: from the input's declared dimensions)
LAYOUTS = ("auto", "NHWC", "NCHW")
#: ONNX nodes that only move, reshape, cast or (de)quantise data: looked through to find the node that made the output
_PASS_THROUGH = {
    "Identity",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Cast",
    "QuantizeLinear",
    "DequantizeLinear",
}
#: ONNX tensor types an input may have, as numpy dtypes
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
#: execution providers never used: the Azure provider's operators send tensors to remote endpoints
_EXCLUDED_PROVIDERS = ("AzureExecutionProvider",)
#: ONNX Runtime's log level for the session: fatal only (every error reaches the caller as an exception)
_LOG_FATAL = 4

Dim = Union[int, str, None]


def check_layout(layout: str) -> str:
    """``layout`` if it is one of :data:`LAYOUTS`, else :class:`ParameterError`."""
    if layout not in LAYOUTS:
        raise ParameterError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return layout


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(
            "running an .onnx suspect needs ONNX Runtime, which is not installed: pip install onnxruntime"
        ) from None
    return onnxruntime


def _free(d: Dim) -> bool:
    """Whether a declared dimension is symbolic (a name, unknown, or negative)."""
    return not isinstance(d, int) or d < 0


def _fits(declared: Sequence[Dim], shape: Sequence[int]) -> bool:
    return len(declared) == len(shape) and all(_free(d) or d == s for d, s in zip(declared, shape))


def _dims_text(dims: Sequence[Dim]) -> str:
    return "(" + ", ".join(str(d) if not _free(d) else (d if isinstance(d, str) and d else "?") for d in dims) + ")"


def _first_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if msg.startswith("[ONNXRuntimeError]"):  # "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Failed to ..."
        msg = msg.split(" : ", 2)[-1]
    return msg[:200]


class ONNXModel:
    """A ``.onnx`` model (a file or its bytes) as a callable: float32 NHWC batch in the model's input scale ->
    float32 outputs. ``labels(x)`` gives the arg-max. See the module docstring for ``layout`` and batching."""

    def __init__(
        self,
        source: Union[str, os.PathLike, bytes],
        *,
        name: Optional[str] = None,
        layout: str = "auto",
        batch_size: int = 256,
        num_threads: Optional[int] = None,
    ) -> None:
        if batch_size < 1:
            raise ParameterError(f"batch_size must be at least 1, got {batch_size}")
        self.layout = check_layout(layout)
        if isinstance(source, (bytes, bytearray)):
            content, self.path = bytes(source), None
        else:
            self.path = Path(source)
            if not self.path.is_file():
                raise ModelError(f"model file {self.path} does not exist")
            content = self.path.read_bytes()
        self.name = name or (self.path.name if self.path else "onnx")
        self.content = content
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.log_severity_level = _LOG_FATAL
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        providers = [p for p in ort.get_available_providers() if p not in _EXCLUDED_PROVIDERS]
        try:
            self._session = ort.InferenceSession(content, options, providers=providers)
        except Exception as exc:  # not a protobuf, not an ONNX graph, unknown operators, external data
            raise ModelError(f"{self.name} is not a readable ONNX model: {_first_line(exc)}") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(
                f"{self.name} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)[:120]}); "
                "a suspect classifier must take one image batch"
            )
        if len(outputs) != 1:
            raise ModelError(f"{self.name} has {len(outputs)} outputs; expected one (the class scores)")
        self._in, self._out = inputs[0], outputs[0]
        if self._in.type not in _FLOAT_TYPES:
            raise ModelError(
                f"{self.name} takes {self._in.type} inputs; only float inputs (float, float16, double) can be "
                "given the fingerprint's points"
            )
        if not self._out.type.startswith("tensor(float") and self._out.type != "tensor(double)":
            raise ModelError(f"{self.name} gives {self._out.type} outputs; expected float class scores")
        self.input_dtype = np.dtype(_FLOAT_TYPES[self._in.type])
        self.input_dims: Tuple[Dim, ...] = tuple(self._in.shape)
        if len(self.input_dims) < 2:
            dims = _dims_text(self.input_dims)
            raise ModelError(f"{self.name} takes inputs of dims {dims}; expected a batch of images")
        batch = self.input_dims[0]
        self.fixed_batch = None if _free(batch) else int(batch)
        if self.fixed_batch == 0:
            raise ModelError(f"{self.name} takes a batch of 0 examples")
        out_dims = tuple(self._out.shape)
        self.num_classes = (
            int(np.prod(out_dims[1:])) if len(out_dims) >= 2 and not any(_free(d) for d in out_dims[1:]) else None
        )
        self.output_kind = "probabilities" if self._producer_op() == "Softmax" else "logits"
        self.batch_size = int(batch_size)
        self.weights = None  # weights_sha256() of an ONNX model: see content_sha256

    # -- inspection -------------------------------------------------------------------------------------------
    def _producer_op(self) -> str:
        """Type of the node that computes the output, looking through the nodes of :data:`_PASS_THROUGH` ("" if
        the ``onnx`` package is absent or the output comes from no node)."""
        try:
            import onnx
        except ImportError:  # pragma: no cover - installed with the requirements
            return ""
        try:
            graph = onnx.load_model_from_string(self.content).graph
        except Exception:  # ONNX Runtime read it; onnx's stricter reader need not
            return ""
        by_output = {t: node for node in graph.node for t in node.output}
        tensor, seen = self._out.name, set()
        while tensor in by_output and tensor not in seen:
            seen.add(tensor)
            node = by_output[tensor]
            if node.op_type not in _PASS_THROUGH or not node.input:
                return str(node.op_type)
            tensor = node.input[0]
        return ""

    @property
    def providers(self) -> List[str]:
        """The execution providers the session runs on (first: preferred)."""
        return list(self._session.get_providers())

    @property
    def content_sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def input_shape(self) -> Optional[Tuple[Optional[int], ...]]:
        """The points' shape per example (H, W, C; None where the model leaves a dimension free) when the layout
        is given, else None (``auto`` decides from the points)."""
        if self.layout == "auto":
            return None
        dims = [None if _free(d) else int(d) for d in self.input_dims[1:]]
        if self.layout == "NCHW":
            if len(dims) != 3:
                return None
            dims = [dims[1], dims[2], dims[0]]
        return tuple(dims)

    def static_input(self) -> Optional[Tuple[int, ...]]:
        """The input's declared dimensions, batch first, when all are fixed (a free batch as 2), else None."""
        rest = self.input_dims[1:]
        if any(_free(d) for d in rest):
            return None
        return (self.fixed_batch or 2,) + tuple(int(d) for d in rest)

    def resolve_layout(self, shape: Sequence[int]) -> str:
        """``NHWC`` or ``NCHW``: how points of ``shape`` per example go into the model (see the module docstring);
        :class:`ModelError` when they fit neither or, with ``auto``, both."""
        shape = tuple(int(s) for s in shape)
        declared = self.input_dims[1:]
        nchw_shape = (shape[2], shape[0], shape[1]) if len(shape) == 3 else None
        nhwc = _fits(declared, shape)
        nchw = nchw_shape is not None and _fits(declared, nchw_shape)
        dims = _dims_text(self.input_dims)
        if self.layout == "NHWC" and not nhwc:
            raise ModelError(f"inputs have shape {shape} per example (NHWC) but {self.name} takes {dims}")
        if self.layout == "NCHW" and not nchw:
            what = f"{nchw_shape} per example as NCHW" if nchw_shape else f"{shape} per example, not an image"
            raise ModelError(f"inputs have shape {what} but {self.name} takes {dims}")
        if self.layout != "auto":
            return self.layout
        if nhwc and nchw:
            raise ModelError(
                f"{self.name} takes {dims}, which fits points of shape {shape} both as NHWC and as NCHW: the layout "
                "is ambiguous; give --layout NHWC|NCHW (layout= in Python)"
            )
        if not nhwc and not nchw:
            raise ModelError(
                f"inputs have shape {shape} per example but {self.name} takes {dims}, which fits them neither as "
                "NHWC nor as NCHW"
            )
        return "NHWC" if nhwc else "NCHW"

    # -- running ------------------------------------------------------------------------------------------------
    def raw(self, x: np.ndarray) -> np.ndarray:
        """The session's own output for one batch already in the model's layout, unconverted."""
        feed = {self._in.name: np.ascontiguousarray(x, dtype=self.input_dtype)}
        try:
            return self._session.run([self._out.name], feed)[0]
        except Exception as exc:
            shape = tuple(np.shape(x))
            raise ModelError(f"{self.name} failed on a batch of shape {shape}: {_first_line(exc)}") from None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Float32 outputs (one row per example) for a float NHWC batch (in the scale the model takes)."""
        x = np.asarray(x, np.float32)
        if x.ndim < 2:
            raise ModelError(f"{self.name} takes a batch of examples, got an array of shape {x.shape}")
        if self.resolve_layout(x.shape[1:]) == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        bs = self.fixed_batch or self.batch_size
        outs: List[np.ndarray] = []
        for s in range(0, len(x), bs):
            chunk = x[s : s + bs]
            n = len(chunk)
            if self.fixed_batch is not None and n < bs:
                chunk = np.concatenate([chunk, np.zeros((bs - n,) + chunk.shape[1:], chunk.dtype)])
            out = np.asarray(self.raw(chunk))
            if out.ndim < 1 or out.shape[0] != len(chunk):
                raise ModelError(f"{self.name} answered a batch of {len(chunk)} with an output of shape {out.shape}")
            outs.append(out.reshape(len(chunk), -1)[:n].astype(np.float32, copy=False))
        if not outs:
            return np.zeros((0, self.num_classes or 0), np.float32)
        return np.concatenate(outs)

    def labels(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self(x), axis=1).astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"ONNXModel({self.name!r}, input {self.input_dtype.name}{_dims_text(self.input_dims)} "
            f"layout {self.layout}, {self.output_kind} output)"
        )
