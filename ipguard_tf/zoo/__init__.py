"""Target and suspect models: architectures, training recipes and post-processings (paper Section 5.1.2)."""

from .architectures import ARCHITECTURES, build_architecture, simple_cnn
from .postprocess import fine_tune_last_layer
from .train import Recipe, RECIPES, evaluate_accuracy, train_model

__all__ = ["ARCHITECTURES", "build_architecture", "simple_cnn", "fine_tune_last_layer", "Recipe", "RECIPES",
           "evaluate_accuracy", "train_model"]
