"""CAE (issue 15): conferrable adversarial examples of a source with an ensemble of surrogates (students of the
source) and references (trained on the true labels), on tiny 8x8 models trained in seconds."""

import numpy as np
import pytest
from conftest import CLASSES, SHAPE

from ipguard_tf.core import registry
from ipguard_tf.core.errors import DataError, ModelError, ParameterError
from ipguard_tf.io.checkpoint import CheckpointError
from ipguard_tf.io.fingerprint_file import load_fingerprint, save_fingerprint
from ipguard_tf.methods.cae import CAE, conferrability, ensemble_output
from ipguard_tf.verification.suspects import verify


def _net(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(SHAPE)
    h = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(inp)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    return keras.Model(inp, keras.layers.Dense(CLASSES)(h))


def _fit(model, x, y, epochs):
    import keras

    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, shuffle=False)
    return model


@pytest.fixture(scope="module")
def world():
    """The regime CAE is built for, in miniature: the source memorises 300 owner examples with random labels, so
    its labels between them are its own quirks. Surrogates learn them from the source's labels on 3,000 queries
    (plus the owner's examples); references learn the owner's 300 true labels only. 3+3 models form the
    ensemble, 2+2 more are held out. About a minute on 2 CPU cores."""
    rng = np.random.default_rng(0)
    x = rng.random((300,) + SHAPE, dtype=np.float32)
    y = rng.integers(0, CLASSES, 300).astype(np.int64)
    queries = rng.random((3000,) + SHAPE, dtype=np.float32)
    source = _fit(_net(0), x, y, epochs=40)
    xs = np.concatenate([x, queries])
    ls = np.argmax(source.predict(xs, verbose=0), axis=1)
    surr = [_fit(_net(10 + i), xs, ls, epochs=12) for i in range(5)]
    refs = [_fit(_net(20 + i), x, y, epochs=40) for i in range(5)]
    return dict(x=x, y=y, source=source, surr=surr[:3], refs=refs[:3], held_surr=surr[3:], held_refs=refs[3:])


def _agreement(models, x, labels):
    return float(np.mean([np.mean(np.argmax(m.predict(x, verbose=0), axis=1) == labels) for m in models]))


def test_cae_examples_transfer_to_surrogates_not_references(world, tmp_path):
    w = world
    m = CAE(surrogates=w["surr"], references=w["refs"], seed=0, max_candidates_per_point=20)
    fp = m.generate(w["source"], 30, w["x"], train_y=w["y"])
    assert len(fp) > 0 and fp.metadata["method"] == "cae" and fp.metadata["statistic"] == "matching_rate"
    # every point: adversarial to the source (its label differs from the true one), in [0, 1]
    assert np.all(fp.y != fp.source) and fp.x.min() >= 0 and fp.x.max() <= 1
    scores = np.asarray(fp.metadata["conferrability"])
    assert np.all(scores >= m.tau)
    # the ensemble: most surrogates label each point as the source, most references do not (measured rates)
    s_rate = _agreement(w["surr"], fp.x, fp.y)
    r_rate = _agreement(w["refs"], fp.x, fp.y)
    print(
        f"CAE {len(fp)} points ({fp.metadata['candidates_searched']} searched): ensemble surrogates agree "
        f"{s_rate:.2f}, references {r_rate:.2f}"
    )
    assert s_rate >= 0.8 and r_rate <= 0.2
    # held-out models: students of the source agree more than independently trained models (the fingerprint's
    # point): measured, and the gap asserted
    hs, hr = _agreement(w["held_surr"], fp.x, fp.y), _agreement(w["held_refs"], fp.x, fp.y)
    print(f"held-out surrogates agree {hs:.2f}, held-out references {hr:.2f}")
    assert hs > hr + 0.2
    # CAEAcc: the source matches itself at 1.0; the file keeps everything
    assert verify(fp, w["source"]).value == 1.0
    save_fingerprint(fp, tmp_path / "cae.npz")
    again = load_fingerprint(tmp_path / "cae.npz")
    assert np.array_equal(again.x, fp.x) and again.metadata["ensemble"] == fp.metadata["ensemble"]


def test_cae_is_deterministic_and_resumes(world, tmp_path):
    w = world
    kw = dict(surrogates=w["surr"], references=w["refs"], seed=3, max_iter=50, batch_size=8, max_candidates_per_point=4)
    a = CAE(**kw).generate(w["source"], 6, w["x"], train_y=w["y"])
    ck = tmp_path / "cae.ckpt.npz"
    b = CAE(**kw).generate(w["source"], 6, w["x"], train_y=w["y"], checkpoint=ck)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    c = CAE(**kw).generate(w["source"], 6, w["x"], train_y=w["y"], checkpoint=ck)  # resumes from the last round
    assert np.array_equal(a.x, c.x)
    with pytest.raises(CheckpointError, match="belongs to another CAE run"):  # another seed: refused
        CAE(**dict(kw, seed=4)).generate(w["source"], 6, w["x"], train_y=w["y"], checkpoint=ck)
    eps = registry.get("cae").defaults()["epsilon"]
    x0 = w["x"]
    # every point lies within epsilon of some owner example of its true class
    for xi, yi in zip(a.x, a.source):
        assert np.min(np.max(np.abs(x0[w["y"] == yi] - xi).reshape(-1, x0[0].size), axis=1)) <= eps + 1e-6


def test_ensemble_output_and_conferrability():
    s = np.array([[[0.9, 0.1], [0.7, 0.3]]], np.float32)  # 1 example, 2 surrogates, 2 classes
    r = np.array([[[0.2, 0.8], [0.4, 0.6]]], np.float32)
    e, s_bar = ensemble_output(s, r)
    assert np.allclose(s_bar.numpy(), [[0.8, 0.2]]) and np.allclose(e.numpy(), [[0.8 * 0.7, 0.2 * 0.3]])
    keep = np.array([[0.0, 0.0]], np.float32)  # nobody kept: everyone kept instead
    e2, _ = ensemble_output(s, r, keep, keep)
    assert np.allclose(e2.numpy(), e.numpy())
    assert np.allclose(conferrability(np.array([0]), s, r), [0.56])


def test_cae_parameters_are_checked(world):
    w = world
    with pytest.raises(ParameterError):
        CAE(seed=0)  # no ensemble
    with pytest.raises(ParameterError):
        CAE(surrogates=w["surr"], seed=0)
    with pytest.raises(ParameterError):
        CAE(surrogates=w["surr"], references=w["refs"], epsilon=0)
    with pytest.raises(ParameterError):
        CAE(surrogates=w["surr"], references=w["refs"], dropout=1.0)
    with pytest.raises(ParameterError):
        CAE(surrogates=w["surr"], references=w["refs"], tau=1.5)
    with pytest.raises(DataError):
        CAE(surrogates=w["surr"], references=w["refs"]).generate(w["source"], 5, w["x"])  # no labels
    with pytest.raises(DataError):
        CAE(zoo="/nonexistent").generate(w["source"], 5, w["x"], train_y=w["y"])
    with pytest.raises(ModelError, match="none of the 5 candidate"):  # a clear error, not an empty fingerprint
        CAE(surrogates=w["surr"], references=w["refs"], max_iter=1, tau=1.0, max_candidates_per_point=1).generate(
            w["source"], 5, w["x"], train_y=w["y"]
        )
