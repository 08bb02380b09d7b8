"""A model's raw outputs as a batch function, whatever its task (TAFA's suspects: classifiers, regressors,
generators), and the Keras 3 model behind a file. The classifier adapter (:mod:`ipguard_tf.models.classifier`)
is the other way to read a model: labels and class scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from ipguard_tf.core.errors import ModelError
from ipguard_tf.models.classifier import load_model_file

#: a batch of inputs to a batch of outputs
OutputFn = Callable[[np.ndarray], np.ndarray]


def keras_outputs(model: Any, batch_size: int = 512) -> OutputFn:
    """A batch function of a Keras model's outputs (inference mode), in batches of ``batch_size``."""

    def f(x: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                np.asarray(model(tf.constant(x[i : i + batch_size]), training=False))
                for i in range(0, len(x), batch_size)
            ]
        )

    return f


def keras_model_of(model: Any) -> keras.Model:
    """The Keras 3 model behind ``model``: a model, or a path loaded with
    :func:`~ipguard_tf.models.classifier.load_model_file`."""
    if isinstance(model, (str, Path)):
        model = load_model_file(model)
    if not isinstance(model, keras.Model):
        raise ModelError(f"TAFA reads a model's hidden ReLUs: it needs a Keras 3 model, got {type(model).__name__}")
    return model


def raw_outputs(suspect: Any, batch_size: int = 512) -> OutputFn:
    """A batch function of ``suspect``'s outputs: a Keras model (2 or 3), a model file, a scikit-learn classifier
    (its probabilities) or a callable."""
    if isinstance(suspect, (str, Path)):
        suspect = load_model_file(suspect)
    if hasattr(suspect, "layers"):
        return keras_outputs(suspect, batch_size)
    if hasattr(suspect, "predict_proba"):  # a scikit-learn classifier (the zoo's forests): its probabilities
        return lambda x, est=suspect: est.predict_proba(np.asarray(x).reshape(len(x), -1))
    if callable(suspect):
        return suspect
    raise ModelError(f"cannot read the outputs of a {type(suspect).__name__}")


def checked_outputs(suspect: Any, probe: np.ndarray, output_size: Optional[int], batch_size: int = 512) -> OutputFn:
    """:func:`raw_outputs`, first asked for its outputs at ``probe`` (a batch of one input): a suspect whose number of
    outputs differs from ``output_size`` (the fingerprinted model's; None: not known) is a :class:`ModelError`, as it
    cannot be a copy."""
    f = raw_outputs(suspect, batch_size)
    got = int(np.asarray(f(probe)).reshape(len(probe), -1).shape[1])
    if output_size is not None and got != int(output_size):
        raise ModelError(
            f"the suspect's outputs have {got} values, the fingerprinted model's {output_size}: "
            "it cannot be a copy of it"
        )
    return f
