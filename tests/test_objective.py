import numpy as np
import pytest
import tensorflow as tf

from ipguard_tf.methods.ipguard import ipguard_objective


def obj(logits, i, j, k):
    return ipguard_objective(tf.constant(logits, tf.float32), tf.constant(i), tf.constant(j), k).numpy()


def test_objective_hand_made_logits():
    # Z = [3, 1, 0, 2]; i = 0, j = 1, k = 1: ReLU(3 - 1 + 1) + ReLU(max(0, 2) - 3) = 3 + 0
    assert obj([[3.0, 1.0, 0.0, 2.0]], [0], [1], 1.0) == pytest.approx([3.0])
    # i is not the runner-up: ReLU(1 - 4 + 1) + ReLU(2 - 1) = 0 + 1
    assert obj([[1.0, 4.0, 0.0, 2.0]], [0], [1], 1.0) == pytest.approx([1.0])
    # satisfied exactly: Z_j = Z_i + k and Z_i = max of the rest
    assert obj([[2.0, 3.0, 2.0, -5.0]], [0], [1], 1.0) == pytest.approx([0.0])
    # both terms: ReLU(0 - 0 + 2) + ReLU(5 - 0) = 7
    assert obj([[0.0, 0.0, 5.0, 1.0]], [0], [1], 2.0) == pytest.approx([7.0])


def test_objective_batch_and_two_classes():
    logits = [[1.0, 0.0], [0.0, 3.0]]
    # two classes: the second term has no t and vanishes
    assert obj(logits, [0, 0], [1, 1], 1.0) == pytest.approx([2.0, 0.0])


def test_objective_zero_iff_conditions():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 5)).astype(np.float32) * 3
    i = rng.integers(0, 5, 500)
    j = (i + rng.integers(1, 5, 500)) % 5
    k = 0.5
    o = obj(z, i, j, k)
    zi, zj = z[np.arange(500), i], z[np.arange(500), j]
    zo = np.array([np.max(np.delete(z[r], [i[r], j[r]])) for r in range(500)])
    expect_zero = (zj - zi >= k) & (zi >= zo)
    assert np.array_equal(o == 0, expect_zero)
    assert np.all(o >= 0)


def test_objective_gradient_flows():
    z = tf.Variable([[1.0, 0.5, 0.8, 0.2]])
    with tf.GradientTape() as tape:
        o = ipguard_objective(z, tf.constant([0]), tf.constant([1]), 1.0)
    g = tape.gradient(o, z).numpy()
    # d/dZ_i = +1 (first term) - 0 (second term inactive: 0.8 < 1); d/dZ_j = -1
    assert g[0, 0] == pytest.approx(1.0) and g[0, 1] == pytest.approx(-1.0)
