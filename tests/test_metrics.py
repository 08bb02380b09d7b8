import numpy as np
import pytest

from ipguard_tf.metrics import aruc, auc, gap, perfect_thresholds, robustness, ru_curves, uniqueness


def test_figure2_perfect():
    # all positives match fully, all negatives never: R = U = 1 at every grid threshold
    assert aruc([1.0, 1.0, 1.0], [0.0, 0.0]) == 1.0
    assert auc([1.0, 1.0], [0.0, 0.0]) == 1.0
    assert gap([1.0], [0.0]) == 1.0


def test_figure2_mediocre():
    # positives just above 0.5, negatives just below: both curves high only around tau = 0.5
    pos, neg = [0.55, 0.6], [0.4, 0.45]
    taus, R, U = ru_curves(pos, neg)
    both = taus[(R == 1) & (U == 1)]
    assert both.min() == pytest.approx(0.46) and both.max() == pytest.approx(0.55)
    a = aruc(pos, neg)
    assert 0.05 < a < 0.6
    assert auc(pos, neg) == 1.0  # AUC cannot see that the gap is small
    assert gap(pos, neg) == pytest.approx(0.1)


def test_figure2_bad():
    # overlap: no threshold makes both large
    pos, neg = [0.2, 0.9], [0.3, 0.95]
    assert aruc(pos, neg) < 0.5
    assert len(perfect_thresholds(pos, neg)) == 0
    assert gap(pos, neg) < 0


def test_eq7_by_hand():
    # one positive at 0.5, one negative at 0.3: min(R, U) = 1 for tau in (0.3, 0.5], i.e. t = 31..50 -> 20/100
    assert aruc([0.5], [0.3]) == pytest.approx(0.20)
    # tau = t/r boundary: a rate of exactly 0.29 is verified at tau = 0.29 and not at 0.30
    assert robustness([0.29], 0.29) == 1.0 and robustness([0.29], 0.30) == 0.0
    assert uniqueness([0.29], 0.29) == 0.0 and uniqueness([0.29], 0.30) == 1.0


def test_aruc_r_parameter():
    assert aruc([0.5], [0.3], r=10) == pytest.approx(0.2)  # t = 4, 5
    with pytest.raises(ValueError):
        aruc([0.5], [0.3], r=0)


def test_auc_ties_and_order():
    assert auc([0.5, 0.7], [0.5, 0.1]) == pytest.approx(0.875)
    assert auc([0.1], [0.9]) == 0.0


@pytest.mark.parametrize("bad", [[], [1.5], [-0.1], [float("nan")]])
def test_bad_rates_raise(bad):
    with pytest.raises(ValueError):
        aruc(bad, [0.1])


def test_monotone_curves():
    rng = np.random.default_rng(0)
    taus, R, U = ru_curves(rng.random(20), rng.random(30))
    assert np.all(np.diff(R) <= 0) and np.all(np.diff(U) >= 0)
