"""Shared fixtures: tiny fixed models and data (CPU, seconds)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("IPGUARD_NO_PROGRESS", "1")

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# the repository root, so that tests can import the experiment scripts (``from experiments import tafa``)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPE = (8, 8, 1)
CLASSES = 4


def make_tiny_keras3(seed: int = 0, softmax: bool = False):
    """A fixed 8x8x1 -> 4-class Keras 3 CNN with seeded random weights."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, activation="relu", padding="same")(inp)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    out = keras.layers.Dense(CLASSES, activation="softmax" if softmax else None)(x)
    return keras.Model(inp, out, name=f"tiny{seed}")


def toy_zoo_dataset():
    """A learnable 28x28x1 toy task for zoo builds (the class is which 7x7 cell is brightest), as a Dataset named
    fashion_mnist so that the zoo's Fashion-MNIST recipes apply."""
    from ipguard_tf.io.data import Dataset

    rng = np.random.default_rng(0)
    n_train, n_test = 768, 256
    x = rng.random((n_train + n_test, 28, 28, 1), dtype=np.float32) * 0.3
    y = rng.integers(0, 10, n_train + n_test)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 4)
        x[i, r * 7 : (r + 1) * 7, col * 7 : (col + 1) * 7] += 0.7
    x = np.clip(x, 0, 1)
    return Dataset("fashion_mnist", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10)


def make_tiny_tf_keras(weights, softmax: bool = True):
    """The same architecture in Keras 2 (tf_keras), loaded with the given weights."""
    import tf_keras

    inp = tf_keras.Input(SHAPE)
    x = tf_keras.layers.Conv2D(4, 3, activation="relu", padding="same")(inp)
    x = tf_keras.layers.Flatten()(x)
    x = tf_keras.layers.Dense(16, activation="relu")(x)
    out = tf_keras.layers.Dense(CLASSES, activation="softmax" if softmax else None)(x)
    m = tf_keras.Model(inp, out, name="tiny_k2")
    m.set_weights(weights)
    return m


#: test files that take minutes, longest first (measured with --durations, see README "Tests"). `./run test`
#: runs the suite on two workers, one file at a time each, in collection order: starting these first lets the
#: two workers finish together instead of one waiting for the ImageNet zoo at the end.
HEAVY_FIRST = (
    "test_imagenet_zoo.py",
    "test_imagenet.py",
    "test_zoo.py",
    "test_art_crosscheck.py",
    "test_resume.py",
    "test_sac_zoo.py",
    "test_owner.py",
    "test_regression.py",
    "test_demo.py",
    "test_remote.py",
    "test_tflite.py",
    "test_stealing.py",
    "test_protect.py",
    "test_tafa.py",
    "test_distribute.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable: order kept within


@pytest.fixture(scope="session")
def tiny_model():
    return make_tiny_keras3(0)


@pytest.fixture(scope="session")
def tiny_data():
    rng = np.random.default_rng(123)
    return rng.random((64,) + SHAPE, dtype=np.float32)


def run_python_script(script: str) -> subprocess.CompletedProcess:
    """Run ``script`` (a template with ``{tests}`` for this folder) in a fresh Python process: for settings that
    must hold for a whole process (logical devices, TF_USE_LEGACY_KERAS)."""
    tests = str(Path(__file__).resolve().parent)
    return subprocess.run(
        [sys.executable, "-c", script.format(tests=tests)], capture_output=True, text=True, timeout=600
    )
