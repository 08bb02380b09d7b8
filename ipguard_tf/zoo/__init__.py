"""Target and suspect models (paper Section 5.1.2): architectures, training recipes, the six post-processings,
negative suspects, and the resumable zoo builder."""

from ipguard_tf.zoo.architectures import (
    ARCHITECTURES,
    build_architecture,
    fmnist_cnn,
    lenet5,
    resnet20,
    simple_cnn,
    twin,
    vgg16,
    wrn22_4,
)
from ipguard_tf.zoo.postprocess import (
    copy_model,
    filter_prune,
    fine_tune_all_layers,
    fine_tune_last_layer,
    measured_sparsity,
    retrain_all_layers,
    retrain_last_layer,
    weight_prune,
)
from ipguard_tf.zoo.train import RECIPES, Recipe, evaluate_accuracy, get_recipe, train_model

__all__ = [
    "ARCHITECTURES",
    "build_architecture",
    "fmnist_cnn",
    "lenet5",
    "resnet20",
    "simple_cnn",
    "twin",
    "vgg16",
    "wrn22_4",
    "copy_model",
    "filter_prune",
    "fine_tune_all_layers",
    "fine_tune_last_layer",
    "measured_sparsity",
    "retrain_all_layers",
    "retrain_last_layer",
    "weight_prune",
    "RECIPES",
    "Recipe",
    "evaluate_accuracy",
    "get_recipe",
    "train_model",
]
