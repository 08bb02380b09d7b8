"""Anti-piracy transforms (Chen & Wu 2018, ``../shared/papers/004_*``, slides "Anti-piracy Transform" and
"Experimental Settings"): the secret module that turns a raw input ``x_r`` into the processed input ``x_p`` on
which the protected model is accurate.

* :class:`FixedTransform`: ``x_p = clip(x_r + delta)``, ``delta`` a bipolar perturbation drawn once from the key:
  each pixel ``-sigma``, ``0`` or ``+sigma`` with probabilities ``p``, ``1 - 2p``, ``p``.
* :class:`LearnedTransform`: the same form with ``delta`` a universal perturbation trained with the model
  ("finding the optimal universal perturbation matrix for all input instances").
* :class:`GeneratorTransform`: ``x_p = clip(x_r + g(x_r))``, ``g`` input-dependent: "a convolutional layer
  (5-by-5), cascaded by a bottleneck layer (1-by-1)".

Every transform is keyed: the same key and parameters give the same transform (the bipolar draw, the learned
perturbation's and the generator's starting values). Outputs are clipped to the data range [0, 1], so a
processed input is a valid image. Choices the slides leave open are stated on each class.
"""

from __future__ import annotations

import secrets
from typing import Any, Dict, List, Sequence

import numpy as np
import tensorflow as tf

from ipguard_tf.core import constants as C
from ipguard_tf.core.errors import ParameterError

SIGMA = C.ANTIPIRACY_SIGMA
P = C.ANTIPIRACY_P
GENERATOR_FILTERS = C.ANTIPIRACY_GENERATOR_FILTERS

KINDS = C.ANTIPIRACY_TRANSFORMS


def new_key() -> int:
    """A fresh 63-bit secret key (from the OS' random source)."""
    return secrets.randbits(63)


def _check_key(key: Any) -> int:
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= int(key) < 2**63:
        raise ParameterError(f"a transform key must be an integer in [0, 2^63), got {key!r}")
    return int(key)


def _check_shape(input_shape: Sequence[int]) -> tuple:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ParameterError(f"input_shape must be (height, width, channels), got {tuple(input_shape)}")
    return shape


def bipolar(input_shape: Sequence[int], sigma: float, p: float, key: int) -> np.ndarray:
    """The bipolar perturbation of ``key``: each entry -sigma, 0, +sigma with probabilities p, 1 - 2p, p."""
    if not (0 < sigma <= 1) or not (0 < p <= 0.5):
        raise ParameterError(f"bipolar perturbation needs 0 < sigma <= 1 and 0 < p <= 0.5, got {sigma}, {p}")
    rng = np.random.default_rng(_check_key(key))
    u = rng.random(_check_shape(input_shape))
    return (sigma * ((u < p).astype(np.float32) - (u >= 1 - p).astype(np.float32))).astype(np.float32)


class Transform:
    """What every anti-piracy transform offers: ``apply`` (TF, usable in ``tf.function`` and differentiable
    w.r.t. its own ``trainable_variables``), ``__call__`` on NumPy batches, its ``params`` and ``arrays``
    (what its key file stores) and the inverse :meth:`from_arrays`."""

    kind: str = ""

    def __init__(self, input_shape: Sequence[int], key: int) -> None:
        self.input_shape = _check_shape(input_shape)
        self.key = _check_key(key)

    @property
    def trainable_variables(self) -> List[tf.Variable]:
        return []

    def perturbation(self, x: tf.Tensor) -> tf.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, x: tf.Tensor) -> tf.Tensor:
        """``x_p = clip(x_r + perturbation, 0, 1)``."""
        x = tf.convert_to_tensor(x, tf.float32)
        return tf.clip_by_value(x + self.perturbation(x), 0.0, 1.0)

    def __call__(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ParameterError(
                f"inputs of shape {tuple(x.shape[1:])} do not match the transform's {self.input_shape}"
            )
        return np.concatenate(
            [self.apply(x[i : i + batch_size]).numpy() for i in range(0, len(x), batch_size)]
            or [np.zeros((0,) + self.input_shape, np.float32)]
        )

    def params(self) -> Dict[str, Any]:
        return {"kind": self.kind, "input_shape": list(self.input_shape), "key": str(self.key)}

    def arrays(self) -> Dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_arrays(cls, params: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> "Transform":
        raise NotImplementedError  # pragma: no cover - abstract


class FixedTransform(Transform):
    """Chen & Wu's *Fixed* approach: a universal bipolar perturbation generated beforehand from the key."""

    kind = "fixed"

    def __init__(self, input_shape: Sequence[int], key: int, sigma: float = SIGMA, p: float = P) -> None:
        super().__init__(input_shape, key)
        self.sigma, self.p = float(sigma), float(p)
        self.delta = bipolar(self.input_shape, self.sigma, self.p, self.key)
        self._delta_t = tf.constant(self.delta)

    def perturbation(self, x: tf.Tensor) -> tf.Tensor:
        return self._delta_t

    def params(self) -> Dict[str, Any]:
        return {**super().params(), "sigma": self.sigma, "p": self.p}

    def arrays(self) -> Dict[str, np.ndarray]:
        return {"delta": self.delta}

    @classmethod
    def from_arrays(cls, params, arrays):
        t = cls(params["input_shape"], int(params["key"]), params["sigma"], params["p"])
        if not np.array_equal(t.delta, arrays["delta"]):
            raise ParameterError("the stored perturbation is not the one its key draws")
        return t


class LearnedTransform(Transform):
    """Chen & Wu's *Learned* approach: a universal perturbation ``delta`` trained jointly with the model.

    The slides do not say where ``delta`` starts; here at the key's bipolar draw with the Fixed parameters
    (``sigma``, ``p``), so that the transform is keyed (a zero start would make every owner's transform begin
    identical) and so that the slides' input-only attack ("a universal bipolar perturbation with the same sigma
    and p") has the sigma and p it refers to. ``delta`` is free during training; ``apply`` clips ``x + delta`` to
    [0, 1] and the loss' gamma term keeps it small."""

    kind = "learned"

    def __init__(self, input_shape: Sequence[int], key: int, sigma: float = SIGMA, p: float = P) -> None:
        super().__init__(input_shape, key)
        self.sigma, self.p = float(sigma), float(p)
        self.delta = tf.Variable(bipolar(self.input_shape, self.sigma, self.p, self.key), name="delta")

    @property
    def trainable_variables(self) -> List[tf.Variable]:
        return [self.delta]

    def perturbation(self, x: tf.Tensor) -> tf.Tensor:
        return self.delta

    def params(self) -> Dict[str, Any]:
        return {**super().params(), "sigma": self.sigma, "p": self.p}

    def arrays(self) -> Dict[str, np.ndarray]:
        return {"delta": self.delta.numpy()}

    @classmethod
    def from_arrays(cls, params, arrays):
        t = cls(params["input_shape"], int(params["key"]), params["sigma"], params["p"])
        delta = np.asarray(arrays["delta"], np.float32)
        if delta.shape != t.input_shape or not np.all(np.isfinite(delta)):
            raise ParameterError(f"the stored perturbation has shape {delta.shape} or non-finite values")
        t.delta.assign(delta)
        return t


class GeneratorTransform(Transform):
    """Chen & Wu's *Generator* approach: ``x_p = clip(x + g(x), 0, 1)`` with ``g`` = conv 5x5 (``filters``
    maps, ReLU, same padding) followed by a 1x1 "bottleneck" conv back to the input's channels (linear, so the
    perturbation can take either sign). Weights start from Glorot-uniform draws seeded by the key, biases at 0.
    The slides name the two layers only; the width and activations are this implementation's choice."""

    kind = "generator"

    def __init__(self, input_shape: Sequence[int], key: int, filters: int = GENERATOR_FILTERS) -> None:
        super().__init__(input_shape, key)
        if isinstance(filters, bool) or int(filters) != filters or filters < 1:
            raise ParameterError(f"generator filters must be a positive integer, got {filters!r}")
        self.filters = int(filters)
        rng = np.random.default_rng(self.key)
        c = self.input_shape[2]

        def glorot(shape):
            fan_in, fan_out = shape[0] * shape[1] * shape[2], shape[0] * shape[1] * shape[3]
            lim = np.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-lim, lim, shape).astype(np.float32)

        self.w1 = tf.Variable(glorot((5, 5, c, self.filters)), name="g_conv5x5_kernel")
        self.b1 = tf.Variable(np.zeros(self.filters, np.float32), name="g_conv5x5_bias")
        self.w2 = tf.Variable(glorot((1, 1, self.filters, c)), name="g_bottleneck_kernel")
        self.b2 = tf.Variable(np.zeros(c, np.float32), name="g_bottleneck_bias")

    _NAMES = ("w1", "b1", "w2", "b2")

    @property
    def trainable_variables(self) -> List[tf.Variable]:
        return [getattr(self, n) for n in self._NAMES]

    def perturbation(self, x: tf.Tensor) -> tf.Tensor:
        h = tf.nn.relu(tf.nn.conv2d(x, self.w1, 1, "SAME") + self.b1)
        return tf.nn.conv2d(h, self.w2, 1, "SAME") + self.b2

    def params(self) -> Dict[str, Any]:
        return {**super().params(), "filters": self.filters}

    def arrays(self) -> Dict[str, np.ndarray]:
        return {n: getattr(self, n).numpy() for n in self._NAMES}

    @classmethod
    def from_arrays(cls, params, arrays):
        t = cls(params["input_shape"], int(params["key"]), params["filters"])
        for n in cls._NAMES:
            v = getattr(t, n)
            a = np.asarray(arrays[n], np.float32)
            if a.shape != tuple(v.shape) or not np.all(np.isfinite(a)):
                raise ParameterError(
                    f"the stored generator weight {n} has shape {a.shape} (expected "
                    f"{tuple(v.shape)}) or non-finite values"
                )
            v.assign(a)
        return t


CLASSES = {c.kind: c for c in (FixedTransform, LearnedTransform, GeneratorTransform)}


def make_transform(kind: str, input_shape: Sequence[int], key: int, **params: Any) -> Transform:
    """A new transform of ``kind`` ("fixed", "learned", "generator") for inputs of ``input_shape``."""
    if kind not in CLASSES:
        raise ParameterError(f"unknown transform {kind!r}; choose one of {', '.join(KINDS)}")
    return CLASSES[kind](input_shape, key, **params)


def psnr(x_r: np.ndarray, x_p: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB, peak 1) of the processed inputs against the raw ones, over the whole
    set (10 log10(1 / MSE)); infinite when they are equal."""
    mse = float(np.mean((np.asarray(x_p, np.float64) - np.asarray(x_r, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))
