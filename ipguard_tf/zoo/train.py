"""Training recipes through Keras ``fit`` (with its progress bar); a seed makes a run repeatable."""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import asdict, dataclass
from typing import Dict, Optional

import keras
import numpy as np

from .architectures import build_architecture

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """How to train one architecture on one dataset."""

    architecture: str
    epochs: int
    batch_size: int = 128
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    augmentation: str = "none"

    def as_dict(self) -> dict:
        return asdict(self)


#: Recipes per (dataset, architecture). Fashion-MNIST target: Adam 1e-3, batch 128, no augmentation.
RECIPES: Dict[tuple, Recipe] = {
    ("fashion_mnist", "fmnist_cnn"): Recipe("fmnist_cnn", epochs=8),
    ("fashion_mnist", "simple_cnn"): Recipe("simple_cnn", epochs=8),
}


def _optimizer(recipe: Recipe, learning_rate: Optional[float] = None):
    lr = recipe.learning_rate if learning_rate is None else learning_rate
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def compile_for_training(model: keras.Model, recipe: Recipe, learning_rate: Optional[float] = None) -> None:
    model.compile(optimizer=_optimizer(recipe, learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])


def train_model(dataset, recipe: Recipe, seed: int, *, verbose: int = 1, epochs: Optional[int] = None) -> keras.Model:
    """Build ``recipe.architecture`` with weights drawn from ``seed`` and train it on ``dataset``."""
    keras.utils.set_random_seed(seed)
    model = build_architecture(recipe.architecture, dataset.input_shape, dataset.num_classes)
    compile_for_training(model, recipe)
    with contextlib.redirect_stdout(sys.stderr):  # Keras' progress bar on stderr; stdout stays for results
        model.fit(dataset.x_train, dataset.y_train, batch_size=recipe.batch_size, epochs=epochs or recipe.epochs,
                  shuffle=True, verbose=verbose)
    return model


def evaluate_accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Test accuracy of any classifier :func:`~ipguard_tf.models.as_classifier` accepts."""
    from ..models import as_classifier

    pred = as_classifier(model).predict_labels(x, batch_size)
    return float(np.mean(pred == np.asarray(y).reshape(-1)))
