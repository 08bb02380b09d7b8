"""The hidden ReLUs of a Keras model, made visible: a probe that returns every ReLU's pre-activation with the
model's output (for TAFA's boundary points; a reconstruction, see :mod:`ipguard_tf.methods.tafa`).

Every ReLU counts, whether a layer of its own (``ReLU``, ``Activation("relu")``) or fused into a ``Dense`` or
``Conv*`` layer (``activation="relu"``): the probe is the model cloned with its own layers (weights shared) and
each fused layer split into a linear twin (weights copied) followed by a ReLU, so its pre-activation is a tensor.
Other piecewise-linear parts (max-pooling, batch normalisation at inference) are followed through; smooth
activations other than the output's make a model that is not a ReLU network, which the probe refuses.
"""

from __future__ import annotations

import logging
from typing import Any, List, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from ipguard_tf.core.errors import ModelError

log = logging.getLogger(__name__)

#: activations a ReLU network may have besides ReLU: before its last ReLU only piecewise-linear ones; after it
#: any (a generator's tanh, a classifier's softmax)
_PIECEWISE_LINEAR = {"linear", "relu"}


def _act_name(layer: Any) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", str(act)) if act is not None else ""


class ReluProbe:
    """``probe(x) -> (pre-activations, output)`` for a Keras 3 functional or sequential model.

    ``layers``: the names of the ReLUs in graph order; ``sizes``: each one's number of neurons (its flattened
    width); neuron ``k`` of the concatenation belongs to layer ``np.searchsorted(offsets, k, "right") - 1``.
    """

    def __init__(self, model: Any) -> None:
        if not isinstance(model, keras.Model):
            raise ModelError(
                "TAFA needs a Keras 3 model to read its hidden ReLUs (got "
                f"{type(model).__name__}); load .keras files with Keras 3"
            )
        pres: List[Any] = []
        names: List[str] = []
        smooth: List[str] = []  # layers with a smooth activation met so far: no ReLU may follow them

        def relu_allowed(layer):
            if smooth:
                raise ModelError(
                    f"hidden layer {smooth[0]} has activation {_act_name(smooth_layers[0])}, and "
                    f"ReLU {layer.name} follows it: not a ReLU network"
                )

        smooth_layers: List[Any] = []

        def call(layer, *args, **kwargs):
            act = _act_name(layer)
            if act == "relu" or isinstance(layer, keras.layers.ReLU):
                relu_allowed(layer)
            if isinstance(layer, keras.layers.ReLU) or (isinstance(layer, keras.layers.Activation) and act == "relu"):
                if isinstance(layer, keras.layers.ReLU) and (
                    layer.negative_slope or layer.max_value is not None or layer.threshold
                ):
                    raise ModelError(f"layer {layer.name} is a leaky or capped ReLU; TAFA needs plain ReLUs")
                pres.append(args[0])
                names.append(layer.name)
                return layer(*args, **kwargs)
            if act == "relu" and not isinstance(layer, keras.layers.Activation):
                cfg = dict(layer.get_config(), activation="linear", name=f"{layer.name}__linear")
                twin = layer.__class__.from_config(cfg)
                z = twin(*args, **kwargs)
                twin.set_weights(layer.get_weights())
                pres.append(z)
                names.append(layer.name)
                return keras.layers.ReLU(name=f"{layer.name}__relu")(z)
            if act and act not in _PIECEWISE_LINEAR:
                smooth.append(layer.name)
                smooth_layers.append(layer)
            return layer(*args, **kwargs)

        clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
        if not pres:
            raise ModelError(f"model {model.name} has no ReLU: nothing for TAFA to fingerprint")
        outputs = clone.outputs if isinstance(clone.outputs, list) else [clone.outputs]
        if len(outputs) != 1:
            raise ModelError(f"model {model.name} has {len(outputs)} outputs; TAFA takes one")
        self.model = model
        self._probe = keras.Model(clone.inputs, pres + outputs[:1], name=f"{model.name}_relu_probe")
        self.layers = names
        self.sizes = [int(np.prod(p.shape[1:])) for p in pres]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.total = int(self.offsets[-1])
        self.input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])

    def __call__(self, x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """(B, total) pre-activations (every ReLU, flattened, concatenated) and the (B, ...) output."""
        outs = self._probe(x, training=False)
        pre = tf.concat([tf.reshape(p, [tf.shape(p)[0], -1]) for p in outs[:-1]], axis=1)
        return pre, outs[-1]

    def layer_of(self, neuron: np.ndarray) -> np.ndarray:
        """The ReLU layer index of each concatenated neuron index."""
        return np.searchsorted(self.offsets, np.asarray(neuron), side="right") - 1

    def pattern(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The activation pattern (pre-activation > 0) of every neuron at each input, bool (B, total)."""
        return np.concatenate(
            [self(tf.constant(x[i : i + batch_size]))[0].numpy() > 0 for i in range(0, len(x), batch_size)]
        )


def relu_probe(model: Any) -> ReluProbe:
    """:class:`ReluProbe` of ``model``."""
    return ReluProbe(model)


__all__: Sequence[str] = ("ReluProbe", "relu_probe")
