"""Training recipes through Keras ``fit`` (with its progress bar on stderr); a seed makes a run repeatable.

``train_model`` seeds Python, NumPy and TensorFlow (``keras.utils.set_random_seed``) and turns on TensorFlow's
deterministic ops, so the same recipe and seed give the same weights on the same machine and library versions
(this is what lets the zoo rebuild a model that is too large to commit).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import asdict, dataclass
from typing import Dict, Optional

import keras
import numpy as np

from ..errors import ParameterError
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


#: Recipes per (dataset, architecture). Fashion-MNIST: Adam 1e-3, batch 128, no augmentation; epochs chosen for
#: the 2-core CPU budget (VGG16: about 7.5 min an epoch here, hence 1 epoch).
RECIPES: Dict[tuple, Recipe] = {
    ("fashion_mnist", "fmnist_cnn"): Recipe("fmnist_cnn", epochs=8),
    ("fashion_mnist", "simple_cnn"): Recipe("simple_cnn", epochs=8),
    ("fashion_mnist", "lenet5"): Recipe("lenet5", epochs=8),
    ("fashion_mnist", "vgg16"): Recipe("vgg16", epochs=1),
    ("fashion_mnist", "resnet20"): Recipe("resnet20", epochs=10),
    # CIFAR (real recipes for machines with the data and time; not run here)
    ("cifar10", "resnet20"): Recipe("resnet20", epochs=182, learning_rate=0.1, optimizer="sgd",
                                    augmentation="crop4+flip"),
    ("cifar10", "lenet5"): Recipe("lenet5", epochs=30),
    ("cifar10", "vgg16"): Recipe("vgg16", epochs=100, learning_rate=0.05, optimizer="sgd", augmentation="crop4+flip"),
    ("cifar100", "wrn22_4"): Recipe("wrn22_4", epochs=200, learning_rate=0.1, optimizer="sgd",
                                    augmentation="crop4+flip"),
    ("cifar100", "lenet5"): Recipe("lenet5", epochs=30),
    ("cifar100", "vgg16"): Recipe("vgg16", epochs=100, learning_rate=0.05, optimizer="sgd", augmentation="crop4+flip"),
}


def get_recipe(dataset: str, architecture: str) -> Recipe:
    try:
        return RECIPES[(dataset, architecture)]
    except KeyError:
        raise ParameterError(f"no training recipe for {architecture} on {dataset}") from None


def _optimizer(recipe: Recipe, learning_rate: Optional[float] = None):
    lr = recipe.learning_rate if learning_rate is None else learning_rate
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    raise ParameterError(f"unknown optimizer {recipe.optimizer!r}")


def compile_for_training(model: keras.Model, recipe: Recipe, learning_rate: Optional[float] = None) -> None:
    model.compile(optimizer=_optimizer(recipe, learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])


def _augment_crop_flip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    oy, ox = rng.integers(0, 9, n), rng.integers(0, 9, n)
    out = np.stack([padded[i, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(n)])
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


def deterministic(seed: int) -> None:
    """Seed everything and make TensorFlow's ops deterministic."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # pragma: no cover - older TF
        pass


def train_model(dataset, recipe: Recipe, seed: int, *, verbose: int = 1, epochs: Optional[int] = None) -> keras.Model:
    """Build ``recipe.architecture`` with weights drawn from ``seed`` and train it on ``dataset``."""
    deterministic(seed)
    model = build_architecture(recipe.architecture, dataset.input_shape, dataset.num_classes)
    compile_for_training(model, recipe)
    n_epochs = epochs or recipe.epochs
    with contextlib.redirect_stdout(sys.stderr):  # Keras' progress bar on stderr; stdout stays for results
        if recipe.augmentation == "none":
            model.fit(dataset.x_train, dataset.y_train, batch_size=recipe.batch_size, epochs=n_epochs,
                      shuffle=True, verbose=verbose)
        else:
            rng = np.random.default_rng(seed)
            for e in range(n_epochs):
                model.fit(_augment_crop_flip(dataset.x_train, rng), dataset.y_train, batch_size=recipe.batch_size,
                          epochs=e + 1, initial_epoch=e, shuffle=True, verbose=verbose)
    return model


def evaluate_accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Test accuracy of any classifier :func:`~ipguard_tf.models.as_classifier` accepts."""
    from ..models import as_classifier

    pred = as_classifier(model).predict_labels(x, batch_size)
    return float(np.mean(pred == np.asarray(y).reshape(-1)))
