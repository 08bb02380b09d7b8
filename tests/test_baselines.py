"""Random, FGSM, IGSM and CW-L2 through the common interface, on the tiny fixed model."""

import numpy as np
import pytest
from conftest import SHAPE

from ipguard_tf import as_classifier, verify
from ipguard_tf.methods import CWL2, FGSM, IGSM, IPGuard, RandomPoints, build_method

N = 16


def _starts(data, seed, init, n=N):
    rng = np.random.default_rng(seed)
    if init == "T":
        return data[rng.choice(len(data), size=n, replace=False)]
    return rng.random((n,) + SHAPE, dtype=np.float32)


@pytest.mark.parametrize("cls", [FGSM, IGSM])
def test_epsilon_zero_returns_start(cls, tiny_model, tiny_data):
    fp = cls(epsilon=0.0, init="T", label="R", seed=1).generate(tiny_model, N, tiny_data)
    np.testing.assert_array_equal(fp.x, _starts(tiny_data, 1, "T"))
    assert np.all(fp.distortion == 0)


@pytest.mark.parametrize("strategy", ["TR", "TL", "RR", "RL"])
@pytest.mark.parametrize("cls, eps", [(FGSM, 0.05), (IGSM, 0.05)])
def test_sign_methods_stay_in_ball_and_domain(cls, eps, strategy, tiny_model, tiny_data):
    fp = cls(epsilon=eps, init=strategy[0], label=strategy[1], seed=2).generate(tiny_model, N, tiny_data)
    x0 = _starts(tiny_data, 2, strategy[0])
    assert fp.x.min() >= 0 and fp.x.max() <= 1
    assert np.abs(fp.x - x0).max() <= eps + 1e-6
    assert np.all(fp.source != fp.target)


def test_fgsm_is_one_signed_step(tiny_model, tiny_data):
    import tensorflow as tf

    eps = 0.03
    fp = FGSM(epsilon=eps, init="T", label="L", seed=4).generate(tiny_model, N, tiny_data)
    x0 = tf.constant(_starts(tiny_data, 4, "T"))
    with tf.GradientTape() as tape:
        tape.watch(x0)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=fp.target, logits=tiny_model(x0))
    expect = np.clip(x0.numpy() - eps * np.sign(tape.gradient(loss, x0).numpy()), 0, 1)
    np.testing.assert_allclose(fp.x, expect, atol=1e-7)
    assert np.all(fp.iterations == 1)


def test_igsm_reaches_target_with_generous_epsilon(tiny_model, tiny_data):
    fp = IGSM(epsilon=1.0, init="R", label="R", seed=0).generate(tiny_model, 40, tiny_data)
    assert fp.converged.mean() >= 0.95
    z = as_classifier(tiny_model).predict_labels(fp.x)
    assert np.array_equal(z[fp.converged], fp.target[fp.converged])
    # stops as soon as the label is y*: one step fewer and it would not be
    assert np.all(fp.iterations[fp.converged] < 1000)


def test_igsm_iterations_and_early_stop(tiny_model, tiny_data):
    fp = IGSM(epsilon=0.5, alpha=0.01, max_iter=7, init="T", label="L", seed=3).generate(tiny_model, N, tiny_data)
    assert fp.iterations.max() <= 7
    assert np.all(fp.iterations[~fp.converged] == 7)


def test_random_points_are_uniform_and_labelled(tiny_model, tiny_data):
    fp = RandomPoints(seed=9).generate(tiny_model, 200, None)
    assert fp.metadata["strategy"][0] == "R"
    assert 0.45 < fp.x.mean() < 0.55 and fp.x.min() >= 0 and fp.x.max() <= 1
    assert np.array_equal(fp.y, as_classifier(tiny_model).predict_labels(fp.x))
    assert verify(fp, tiny_model).matching_rate == 1.0


@pytest.fixture(scope="module")
def cw_and_ipguard(tiny_model, tiny_data):
    """CW-L2 (kappa 0, the reference's default) and IPGuard (k = 0.1) from the same 24 starts and targets."""
    kw = dict(init="R", label="R", seed=11, learning_rate=0.05, max_iter=300)
    cw = CWL2(kappa=0.0, **kw)
    ipg = IPGuard(k=0.1, **kw)
    return cw.generate(tiny_model, 24, tiny_data), ipg.generate(tiny_model, 24, tiny_data)


def test_cw_reaches_targets_and_domain(cw_and_ipguard, tiny_model):
    cw, _ = cw_and_ipguard
    assert cw.converged.mean() >= 0.95
    assert cw.x.min() >= 0 and cw.x.max() <= 1
    z = as_classifier(tiny_model).predict_logits(cw.x)
    c = cw.converged
    idx = np.arange(len(cw))
    zt = z[idx, cw.target]
    zo = np.array([np.max(np.delete(z[r], cw.target[r])) for r in idx])
    assert np.all(zt[c] >= zo[c] - 1e-3)
    # failed points are returned at their start and flagged
    assert np.all(cw.distortion[~c] == 0)


def test_cw_distortion_smaller_than_ipguard(cw_and_ipguard):
    cw, ipg = cw_and_ipguard
    np.testing.assert_array_equal(cw.source, ipg.source)
    np.testing.assert_array_equal(cw.target, ipg.target)
    both = cw.converged & ipg.converged
    assert both.sum() >= 10
    assert cw.distortion[both].mean() < ipg.distortion[both].mean()


def test_methods_deterministic(tiny_model, tiny_data):
    for m in (
        lambda: IGSM(epsilon=0.2, seed=5),
        lambda: CWL2(kappa=0.0, learning_rate=0.01, max_iter=50, binary_search_steps=2, seed=5),
    ):
        a, b = m().generate(tiny_model, 6, tiny_data), m().generate(tiny_model, 6, tiny_data)
        np.testing.assert_array_equal(a.x, b.x)


@pytest.mark.parametrize(
    "name, bad",
    [
        ("fgsm", dict(epsilon=-0.1)),
        ("fgsm", dict(epsilon=2.0)),
        ("igsm", dict(alpha=0)),
        ("igsm", dict(max_iter=-1)),
        ("cw", dict(kappa=-1)),
        ("cw", dict(binary_search_steps=0)),
        ("cw", dict(initial_const=0)),
        ("cw", dict(max_iter=0)),
        ("cw", dict(learning_rate=-1.0)),
        ("random", dict(init="Q")),
    ],
)
def test_bad_parameters_raise(name, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        build_method(name, **bad)
