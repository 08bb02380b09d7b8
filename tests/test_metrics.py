import numpy as np
import pytest

from ipguard_tf.core.errors import ParameterError
from ipguard_tf.core.metrics import aruc, auc, gap, perfect_thresholds, robustness, ru_curves, uniqueness


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


def test_sac_attack_rows_and_verdicts():
    """SAC Table 3's layout from per-suspect statistics: one row per attack present, the average of SAC's six,
    the direction of a distance statistic, verdicts against SAC's numbers within the stated tolerance."""
    import json
    from pathlib import Path
    from types import SimpleNamespace as NS

    from ipguard_tf.evaluation import report

    fams = ["finetune_a", "finetune_l", "prune", "extract_l", "extract_p", "extract_adv", "quantized"]
    sus = [NS(name=f, role="positive", family=f) for f in fams] + [
        NS(name=f"irr{i}", role="negative", family="irrelevant") for i in range(3)
    ]
    rates = {
        "finetune_a": 1.0,
        "finetune_l": 0.9,
        "prune": 0.8,
        "extract_l": 0.2,
        "extract_p": 0.35,
        "extract_adv": 0.1,
        "quantized": 0.95,
        "irr0": 0.15,
        "irr1": 0.3,
        "irr2": 0.25,
    }
    rows = {r["attack"]: r for r in report.attack_rows(rates, sus)}
    assert rows["Finetune-A"]["auc"] == 1.0 and rows["Extract-Adv"]["auc"] == 0.0
    assert rows["Extract-L"]["auc"] == pytest.approx(1 / 3) and rows["Extract-P"]["auc"] == pytest.approx(1.0)
    assert rows["Quantized"]["in_sac"] is False and rows["Finetune-A"]["n_negative"] == 3
    six = [rows[a]["auc"] for a in report.SAC_ATTACKS]
    assert rows["Average"]["auc"] == pytest.approx(sum(six) / 6)
    distances = {k: 1 - v for k, v in rates.items()}  # lower = copy: the same ranking, the same AUCs
    flipped = {r["attack"]: r["auc"] for r in report.attack_rows(distances, sus, higher_is_copy=False)}
    assert flipped == {a: r["auc"] for a, r in rows.items()}
    published = json.loads(
        (Path(__file__).resolve().parents[1] / "experiments" / "published" / "sac_appendix.json").read_text()
    )
    judged = {r["attack"]: r for r in report.judge_attack_rows(list(rows.values()), published, "IPGuard")}
    assert judged["Finetune-A"]["verdict"] == "holds" and judged["Finetune-A"]["sac"] == 1.0
    assert judged["Extract-Adv"]["verdict"] == "does not hold"  # 0.0 against SAC's 0.34
    assert judged["Quantized"]["verdict"] == "not in SAC"
    # SAC's Pruning row: snapshots up to 50 % pruned only
    deep = NS(name="prune_deep", role="positive", family="prune", record={"pruned_fraction": 0.8})
    shallow = NS(name="prune", role="positive", family="prune", record={"pruned_fraction": 0.5})
    sus2 = [s for s in sus if s.family != "prune"] + [deep, shallow]
    rows2 = {r["attack"]: r for r in report.attack_rows(dict(rates, prune_deep=0.0), sus2)}
    assert rows2["Pruning"]["n_positive"] == 1 and rows2["Pruning"]["auc"] == rows["Pruning"]["auc"]


def test_sac_table_per_method_with_transfer_rows():
    """One row per (attack, method) at each method's best run, each on its own statistic's direction; the
    transfer rows (SAC Table 5) only for a method whose statistics include the transfer models, judged against
    Table 5; ARUC on a distance too."""
    import json
    from pathlib import Path
    from types import SimpleNamespace as NS

    from ipguard_tf.evaluation import report

    fams = ["finetune_a", "finetune_l", "prune", "extract_l", "extract_p", "extract_adv", "transfer_a"]
    sus = [NS(name=f, role="positive", family=f) for f in fams] + [
        NS(name=f"irr{i}", role="negative", family="irrelevant") for i in range(3)
    ]
    rates = {
        "finetune_a": 1.0,
        "finetune_l": 0.9,
        "prune": 0.8,
        "extract_l": 0.2,
        "extract_p": 0.35,
        "extract_adv": 0.1,
        "irr0": 0.15,
        "irr1": 0.3,
        "irr2": 0.25,
    }  # no transfer model: labels only
    dist = {
        "finetune_a": 0.0,
        "finetune_l": 0.01,
        "prune": 0.02,
        "extract_l": 0.05,
        "extract_p": 0.04,
        "extract_adv": 0.2,
        "transfer_a": 0.03,
        "irr0": 0.1,
        "irr1": 0.15,
        "irr2": 0.12,
    }
    best = {
        "ipguard": {"rates": rates, "higher_is_copy": True, "statistic": "matching_rate"},
        "sac-m": {"rates": dist, "higher_is_copy": False, "statistic": "sac_distance"},
    }
    published = json.loads(
        (Path(__file__).resolve().parents[1] / "experiments" / "published" / "sac_appendix.json").read_text()
    )
    rows = {(r["attack"], r["method"]): r for r in report.sac_table(best, sus, published)}
    assert ("Transfer-A", "IPGuard") not in rows
    t = rows[("Transfer-A", "SAC-m")]
    assert t["auc"] == 1.0 and t["sac"] == 1.0 and t["sac_source"].startswith("Table 5") and t["verdict"] == "holds"
    assert rows[("Extract-Adv", "SAC-m")]["auc"] == 0.0 and rows[("Extract-L", "SAC-m")]["auc"] == 1.0
    # ARUC over the thresholds 0, 0.01, ..., 0.99 of a distance: here the first 0.10-0.15 of them separate
    from ipguard_tf.core.metrics import aruc

    assert (
        rows[("Finetune-A", "SAC-m")]["aruc"] == pytest.approx(aruc([0.0], [0.1, 0.15, 0.12], higher_is_copy=False))
        and 0.1 < rows[("Finetune-A", "SAC-m")]["aruc"] < 0.15
    )
    assert rows[("Average", "IPGuard")]["auc"] == pytest.approx(
        sum(rows[(a, "IPGuard")]["auc"] for a in report.SAC_ATTACKS) / 6
    )


def test_clopper_pearson_covers_the_true_rate_on_simulated_matches():
    """Issue 16: the 95 % interval verify prints covers the true matching rate in at least 95 % of simulated
    verifications (Clopper-Pearson is conservative); measured over 2,000 draws per rate."""
    from ipguard_tf.core.metrics import clopper_pearson

    rng = np.random.default_rng(0)
    for p in (0.02, 0.3, 0.5, 0.9, 1.0):
        k = rng.binomial(100, p, size=2000)
        cover = np.mean([lo <= p <= hi for lo, hi in (clopper_pearson(int(m), 100) for m in k)])
        assert cover >= 0.95, (p, cover)
    lo, hi = clopper_pearson(0, 100)
    assert lo == 0.0 and 0.03 < hi < 0.04  # the rule of three: about 3/n
    assert clopper_pearson(100, 100) == (pytest.approx(1 - hi), 1.0)
    with pytest.raises(ParameterError):
        clopper_pearson(5, 4)
    with pytest.raises(ParameterError):
        clopper_pearson(1, 10, level=1.0)
