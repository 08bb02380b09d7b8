"""The three threat levels against an anti-piracy model (Chen & Wu 2018, slides "Threat Modeling" and
"Performance Under Attacks").

1. :func:`direct_piracy`: the thief copies the model and feeds it raw inputs.
2. :func:`input_only_attack`: the thief has raw inputs only and guesses the transform: a fresh universal
   bipolar perturbation with the owner's ``sigma`` and ``p`` (the slides' attack), per trial; mean and best
   accuracy over the trials.
3. :func:`pair_attack`: the thief holds (x_r, x_p) pairs for a fraction of the training set and trains its own
   transform module on them (mean squared error to x_p), then feeds the model its module's outputs; mean and
   best over trials.

Choices the slides leave open: the pair attacker's module is of the owner's transform family (the slides name
the three families, so the attacker knows them; a convolutional generator cannot produce a position-dependent
universal perturbation, and a universal perturbation cannot imitate an input-dependent one): a universal
perturbation (:class:`~ipguard_tf.protect.transforms.LearnedTransform`, started at its own bipolar guess) against
Fixed and Learned, a :class:`~ipguard_tf.protect.transforms.GeneratorTransform` against Generator. It is trained
with Adam (1e-3, batch 128) for :data:`PAIR_EPOCHS` epochs over its pairs, whatever their number; each trial
draws its own subset and initialisation. The slides report the pair attack for the Generator only ("-" for
Fixed and Learned, where pairs give the perturbation away); it is run on all three here. Accuracy is always
measured on the test set, which no attacker trains on.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Sequence

import keras
import numpy as np
import tensorflow as tf

from ipguard_tf.core import constants as C
from ipguard_tf.core.checks import check_number
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.io.progress import progress_bar
from ipguard_tf.models.classifier import as_classifier
from ipguard_tf.protect.transforms import FixedTransform, GeneratorTransform, LearnedTransform, Transform
from ipguard_tf.zoo.train import evaluate_accuracy as accuracy

log = logging.getLogger(__name__)

INPUT_ONLY_TRIALS = C.ANTIPIRACY_INPUT_ONLY_TRIALS
PAIR_TRIALS = C.ANTIPIRACY_PAIR_TRIALS
PAIR_FRACTIONS = C.ANTIPIRACY_PAIR_FRACTIONS
PAIR_EPOCHS = C.ANTIPIRACY_PAIR_EPOCHS
#: the pair attacker's module per owner's transform (see the module docstring)
PAIR_FAMILIES = {"fixed": "universal", "learned": "universal", "generator": "generator"}


def _summary(accs: Sequence[float]) -> Dict[str, Any]:
    return {
        "accuracies": [float(a) for a in accs],
        "mean": float(np.mean(accs)),
        "best": float(np.max(accs)),
        "trials": len(accs),
    }


def direct_piracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Threat 1: accuracy of the copied model on raw inputs."""
    return accuracy(model, np.asarray(x, np.float32), y)


def raw_class_counts(model, x: np.ndarray, num_classes: int, batch_size: int = 512) -> Dict[str, Any]:
    """How the copied model labels raw inputs: the count of each predicted class, and the most frequent class
    with its share (a model that answers one class to everything has a share near 1)."""

    pred = as_classifier(model).predict_labels(np.asarray(x, np.float32), batch_size)
    counts = np.bincount(pred, minlength=num_classes)
    top = int(np.argmax(counts))
    return {"counts": [int(c) for c in counts], "top_class": top, "top_share": float(counts[top] / len(pred))}


def input_only_attack(
    model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sigma: float,
    p: float,
    trials: int = INPUT_ONLY_TRIALS,
    seed: int = 0,
    progress: bool = True,
) -> Dict[str, Any]:
    """Threat 2: accuracy of the model on ``x`` under ``trials`` fresh bipolar perturbations (``sigma``, ``p``),
    each from a key drawn from ``seed``; ``{"accuracies", "mean", "best", "trials"}``."""
    if isinstance(trials, bool) or int(trials) != trials or trials < 1:
        raise ParameterError(f"trials must be a positive integer, got {trials!r}")
    x = np.asarray(x, np.float32)
    keys = np.random.default_rng(seed).integers(0, 2**63 - 1, size=int(trials))
    accs = []
    with progress_bar(int(trials), desc="input-only attack", enabled=progress, unit="trial") as bar:
        for k in keys:
            t = FixedTransform(x.shape[1:], int(k), sigma, p)
            accs.append(accuracy(model, t(x), y))
            bar.update(1)
    return _summary(accs)


def train_pair_module(
    x_r: np.ndarray,
    x_p: np.ndarray,
    *,
    key: int,
    family: str = "generator",
    epochs: int = PAIR_EPOCHS,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
) -> Transform:
    """The pair attacker's transform module, trained to map ``x_r`` to ``x_p`` (mean squared error; Adam,
    ``epochs`` passes over the pairs): ``family`` "generator" a :class:`GeneratorTransform`, "universal" a
    universal perturbation (:class:`LearnedTransform`), each started from ``key``."""
    x_r, x_p = np.asarray(x_r, np.float32), np.asarray(x_p, np.float32)
    if x_r.shape != x_p.shape or len(x_r) == 0:
        raise ParameterError(f"pairs must be two arrays of one shape, got {x_r.shape} and {x_p.shape}")
    if family not in PAIR_FAMILIES.values():
        raise ParameterError(f"pair module family must be generator or universal, got {family!r}")
    g = (GeneratorTransform if family == "generator" else LearnedTransform)(x_r.shape[1:], key)
    opt = keras.optimizers.Adam(learning_rate)
    variables = g.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(a, b):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(g.apply(a) - b))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    rng = np.random.default_rng(key)
    for _ in range(int(epochs)):
        order = rng.permutation(len(x_r))
        for s in range(0, len(x_r), batch_size):
            idx = order[s : s + batch_size]
            step(tf.constant(x_r[idx]), tf.constant(x_p[idx]))
    return g


def pair_attack(
    model,
    transform: Transform,
    x_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    fraction: float,
    trials: int = PAIR_TRIALS,
    seed: int = 0,
    epochs: int = PAIR_EPOCHS,
    progress: bool = True,
) -> Dict[str, Any]:
    """Threat 3: for each trial, a random ``fraction`` of ``x_train`` with its processed versions
    ``transform(x)`` trains the attacker's module (:func:`train_pair_module`, of the family
    :data:`PAIR_FAMILIES` gives); the model's accuracy on the module's outputs for ``x_test``.
    ``{"accuracies", "mean", "best", "trials", "pairs", "module"}``."""
    check_number(fraction, "fraction", 0.0, 1.0, low_open=True)
    if isinstance(trials, bool) or int(trials) != trials or trials < 1:
        raise ParameterError(f"trials must be a positive integer, got {trials!r}")
    x_train = np.asarray(x_train, np.float32)
    x_test = np.asarray(x_test, np.float32)
    n = max(1, int(math.floor(fraction * len(x_train) + 0.5)))
    family = PAIR_FAMILIES[transform.kind]
    rng = np.random.default_rng([seed, int(round(fraction * 1000))])
    accs = []
    with progress_bar(int(trials), desc=f"pair attack {fraction:.0%}", enabled=progress, unit="trial") as bar:
        for _ in range(int(trials)):
            idx = rng.choice(len(x_train), n, replace=False)
            module = train_pair_module(
                x_train[idx], transform(x_train[idx]), family=family, key=int(rng.integers(0, 2**63 - 1)), epochs=epochs
            )
            accs.append(accuracy(model, module(x_test), y_test))
            bar.update(1)
    return {**_summary(accs), "pairs": n, "module": family}
