"""The models of TAFA's three tasks on Fashion-MNIST (reconstruction; issue 18), and their copies.

* Generator: the seed's Fashion scenario, a fully connected WGAN generator 64-128-256-512-784 (ReLU hidden
  layers, tanh output scaled to [0, 1]) with a 784-512-256-1 critic (the seed writes 768, Fashion-MNIST images
  have 784 pixels). Trained as Arjovsky et al.'s WGAN: RMSprop 5e-5, critic weights clipped to [-0.01, 0.01],
  5 critic steps per generator step, batch 64 (the WGAN paper's defaults), for :data:`WGAN_ITERATIONS`
  generator steps (chosen for this CPU: the WGAN paper runs far longer; the images are blurry, which does not
  matter for fingerprinting the function), resumable.
* Regressor: the seed's Warfarin scenario is a 3-layer ReLU network with 100 hidden units on tabular data that
  is not available here; the Fashion-MNIST stand-in predicts an image's bottom half (14 x 28 pixels) from its top
  half, a multi-output regression: a fully connected 392-100-100-392 ReLU network (the seed's width), mean
  squared error, Adam 1e-3, batch 128, :data:`REGRESSOR_EPOCHS` epochs.
* Classifier: the project's Fashion-MNIST zoo (``pretrained/fashion_mnist``), its positives and negatives.

Copies (positives) of the generator and the regressor: fine-tuned (training continued, a tenth of the learning
rate) and magnitude-pruned (the smallest weights of every kernel set to 0; no retraining), as pure functions
``model -> new model``. Negatives: the same recipe with other seeds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from ipguard_tf.core.checks import check_number
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.io.checkpoint import StateFile
from ipguard_tf.io.progress import progress_bar

log = logging.getLogger(__name__)

LATENT = 64
GENERATOR_UNITS = (128, 256, 512)
CRITIC_UNITS = (512, 256)
WGAN_LR = 5e-5
WGAN_CLIP = 0.01
WGAN_CRITIC_STEPS = 5
WGAN_BATCH = 64
#: generator steps (see the module docstring)
WGAN_ITERATIONS = 3000
REGRESSOR_HIDDEN = (100, 100)
REGRESSOR_EPOCHS = 10
WGAN_SCHEMA = "ipguard_tf.wgan-training/1"


def generator(seed: int, K: Any = keras):
    """The WGAN generator: N(0, 1) latent (64) -> 28x28x1 image in [0, 1]."""
    keras.utils.set_random_seed(seed)
    inp = K.Input((LATENT,), name="latent")
    h = inp
    for i, u in enumerate(GENERATOR_UNITS):
        h = K.layers.Dense(u, activation="relu", name=f"g{i + 1}")(h)
    h = K.layers.Dense(784, activation="tanh", name="g_out")(h)
    h = K.layers.Rescaling(0.5, offset=0.5, name="to_unit")(h)
    return K.Model(inp, K.layers.Reshape((28, 28, 1), name="image")(h), name=f"wgan_generator_s{seed}")


def critic(seed: int):
    """The WGAN critic: image -> score (784-512-256-1, ReLU)."""
    keras.utils.set_random_seed(seed + 10_000)
    inp = keras.Input((28, 28, 1))
    h = keras.layers.Flatten()(inp)
    for u in CRITIC_UNITS:
        h = keras.layers.Dense(u, activation="relu")(h)
    return keras.Model(inp, keras.layers.Dense(1)(h), name=f"wgan_critic_s{seed}")


def regressor(seed: int):
    """Top half (14x28x1) -> bottom half (392 values), 392-100-100-392 ReLU."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((14, 28, 1), name="top_half")
    h = keras.layers.Flatten()(inp)
    for i, u in enumerate(REGRESSOR_HIDDEN):
        h = keras.layers.Dense(u, activation="relu", name=f"r{i + 1}")(h)
    return keras.Model(inp, keras.layers.Dense(392, name="bottom_half")(h), name=f"regressor_s{seed}")


def halves(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(top halves, flattened bottom halves) of 28x28x1 images."""
    x = np.asarray(x, np.float32)
    return x[:, :14], x[:, 14:].reshape(len(x), -1)


def train_regressor(
    model, x: np.ndarray, *, seed: int, epochs: int = REGRESSOR_EPOCHS, learning_rate: float = 1e-3, verbose: int = 0
):
    """Train (in place) on the top-to-bottom-half task; returns the model."""
    keras.utils.set_random_seed(seed)
    top, bottom = halves(x)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    model.fit(top, bottom, batch_size=128, epochs=epochs, shuffle=True, verbose=verbose)
    return model


def _wgan_state(path: Path, g, c, seed: int, learning_rate: float) -> StateFile:
    """The WGAN checkpoint: arrays ``gI``, ``cI`` (the generator's and critic's weights), ``ogI``, ``ocI`` (their
    optimisers' variables); scalar ``step`` (generator steps done). Its identity: the two models (names and
    sizes), the seed and the learning rate (not the number of steps, so that a finished run can go on)."""
    identity = {
        "generator": g.name,
        "critic": c.name,
        "parameters": [int(g.count_params()), int(c.count_params())],
        "seed": int(seed),
        "learning_rate": float(learning_rate),
    }
    return StateFile(
        path,
        identity,
        "WGAN checkpoint",
        schema=WGAN_SCHEMA,
        other="another WGAN run (models, seed or learning rate differ)",
    )


def train_wgan(
    g,
    c,
    x: np.ndarray,
    *,
    seed: int,
    iterations: int = WGAN_ITERATIONS,
    learning_rate: float = WGAN_LR,
    checkpoint: Optional[Path] = None,
    every: int = 500,
    progress: bool = True,
) -> Dict[str, Any]:
    """Train generator ``g`` and critic ``c`` (in place) as a WGAN on images ``x`` in [0, 1] for ``iterations``
    generator steps; resumable from ``checkpoint`` (saved every ``every`` steps and after the last; a checkpoint
    of another run raises a one-line :class:`~ipguard_tf.io.checkpoint.CheckpointError`). Returns the last
    losses."""
    if iterations < 1:
        raise ParameterError(f"iterations must be >= 1, got {iterations}")
    x = np.asarray(x, np.float32)
    opt_g, opt_c = keras.optimizers.RMSprop(learning_rate), keras.optimizers.RMSprop(learning_rate)
    opt_g.build(g.trainable_variables)
    opt_c.build(c.trainable_variables)
    parts = {"g": g.weights, "c": c.weights, "og": opt_g.variables, "oc": opt_c.variables}
    store = None if checkpoint is None else _wgan_state(Path(checkpoint), g, c, seed, learning_rate)
    saved = None if store is None else store.load()
    start = 0
    if saved is not None:
        a, scalars = saved
        try:
            values = [(v, a[f"{p}{i}"]) for p, vs in parts.items() for i, v in enumerate(vs)]
            start = int(scalars["step"])
        except (KeyError, TypeError, ValueError):
            raise store.unreadable("fields missing") from None
        for v, value in values:
            v.assign(value)
        log.info("WGAN: resuming at generator step %d of %d", start, iterations)

    @tf.function(reduce_retracing=True)
    def critic_step(real, z):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(c(g(z, training=False), training=True)) - tf.reduce_mean(c(real, training=True))
        opt_c.apply_gradients(zip(tape.gradient(loss, c.trainable_variables), c.trainable_variables))
        for w in c.trainable_variables:
            w.assign(tf.clip_by_value(w, -WGAN_CLIP, WGAN_CLIP))
        return loss

    @tf.function(reduce_retracing=True)
    def generator_step(z):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(c(g(z, training=True), training=False))
        opt_g.apply_gradients(zip(tape.gradient(loss, g.trainable_variables), g.trainable_variables))
        return loss

    lc = lg = float("nan")
    with progress_bar(iterations, desc=f"WGAN {g.name}", enabled=progress, unit="step", initial=start) as bar:
        for step in range(start, iterations):
            step_rng = np.random.default_rng([seed, step])
            for _ in range(WGAN_CRITIC_STEPS):
                real = x[step_rng.integers(0, len(x), WGAN_BATCH)]
                lc = float(
                    critic_step(
                        tf.constant(real),
                        tf.constant(step_rng.standard_normal((WGAN_BATCH, LATENT)).astype(np.float32)),
                    )
                )
            lg = float(generator_step(tf.constant(step_rng.standard_normal((WGAN_BATCH, LATENT)).astype(np.float32))))
            bar.update(1)
            if store is not None and ((step + 1) % every == 0 or step + 1 == iterations):
                store.save(
                    {f"{p}{i}": v.numpy() for p, vs in parts.items() for i, v in enumerate(vs)}, {"step": step + 1}
                )
    return {"critic_loss": lc, "generator_loss": lg, "iterations": iterations}


def magnitude_prune(model, fraction: float):
    """A copy of ``model`` with the ``fraction`` smallest-magnitude weights of every kernel set to 0 (no
    retraining); the input model is not changed."""
    check_number(fraction, "fraction", 0.0, 1.0, low_open=True, high_open=True)
    new = keras.models.clone_model(model)
    weights = []
    for layer_w, v in zip(model.get_weights(), model.weights):
        w = np.array(layer_w)
        if "kernel" in v.path and w.size:
            cut = np.quantile(np.abs(w), fraction)
            w[np.abs(w) < cut] = 0.0
        weights.append(w)
    new.set_weights(weights)
    return new


__all__ = ["generator", "critic", "regressor", "halves", "train_regressor", "train_wgan", "magnitude_prune"]
