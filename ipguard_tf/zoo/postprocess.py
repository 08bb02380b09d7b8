"""Post-processings of the target (paper Section 5.1.2) as pure functions ``(model, data, params) -> new model``.

The input model is never modified: each function clones it (architecture and weights) first.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import keras

from .train import RECIPES, Recipe, compile_for_training

log = logging.getLogger(__name__)


def clone_keras3(model: keras.Model) -> keras.Model:
    """An independent copy (same architecture, copied weights) of a Keras 3 model."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _last_trainable_layer(model: keras.Model):
    for layer in reversed(model.layers):
        if layer.weights:
            return layer
    raise ValueError(f"model {model.name} has no layer with weights")


def fine_tune_last_layer(model: keras.Model, dataset, *, epochs: int = 2, learning_rate: float = 1e-3,
                         batch_size: int = 128, seed: int = 0, verbose: int = 1) -> keras.Model:
    """FTLL: fine-tune only the last (fully connected) layer on the training data; all others frozen."""
    keras.utils.set_random_seed(seed)
    new = clone_keras3(model)
    last = _last_trainable_layer(new)
    for layer in new.layers:
        layer.trainable = layer is last
    compile_for_training(new, Recipe("ftll", epochs=epochs, batch_size=batch_size), learning_rate)
    with contextlib.redirect_stdout(sys.stderr):
        new.fit(dataset.x_train, dataset.y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
    for layer in new.layers:
        layer.trainable = True
    return new
