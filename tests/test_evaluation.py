"""Sweeps over suspects with caching, and the report (tables, figures, claims) on tiny models."""

import json

import numpy as np
import pytest
from conftest import make_tiny_keras3

from ipguard_tf import as_classifier
from ipguard_tf.evaluation import report
from ipguard_tf.evaluation.sweep import Suspect, Sweep


@pytest.fixture(scope="module")
def suspects():
    import keras

    target = make_tiny_keras3(0)
    # positives: the target with tiny weight noise; negatives: other seeds
    pos = []
    for i in range(3):
        m = keras.models.clone_model(target)
        rng = np.random.default_rng(i)
        m.set_weights([w + rng.normal(0, 0.002, w.shape).astype(w.dtype) for w in target.get_weights()])
        pos.append(Suspect(f"pos{i}", "positive", "noisy", "noisy", as_classifier(m)))
    neg = [
        Suspect(f"neg{i}", "negative", "other_seed", "other_seed", as_classifier(make_tiny_keras3(10 + i)))
        for i in range(3)
    ]
    return target, pos + neg


def test_sweep_caches_and_resumes(suspects, tiny_data, tmp_path, monkeypatch):
    target, sus = suspects
    kw = dict(n=12, method_params={"ipguard": {"learning_rate": 0.01, "max_iter": 100}}, progress=False)
    sw = Sweep(tmp_path, target, tiny_data, sus, **kw)
    r = sw.run("ipguard", "TL", 0.5, 0)
    assert set(r["rates"]) == {s.name for s in sus}
    assert 0 <= r["aruc"] <= 1 and r["n"] == 12
    assert (tmp_path / "fp" / "ipguard_TL_0.5_seed0.npz").exists()
    # a new sweep on the same folder reuses the fingerprint and the rates
    sw2 = Sweep(tmp_path, target, tiny_data, sus, **kw)
    sw2 = Sweep(tmp_path, target, tiny_data, sus, **kw)
    r2 = sw2.run("ipguard", "TL", 0.5, 0)
    assert r2["rates"] == r["rates"]
    cached = json.loads((tmp_path / "rates" / "ipguard_TL_0.5_seed0.json").read_text())
    assert set(cached["rates"]) == {s.name for s in sus}
    # a member rebuilt under the same name (another recipe: another content SHA-256) is verified again
    from dataclasses import replace

    swapped = [
        replace(s, classifier=sus[0].classifier, record={"content_sha256": "new"}) if s.name == "neg0" else s
        for s in sus
    ]
    r3 = Sweep(tmp_path, target, tiny_data, swapped, **kw).run("ipguard", "TL", 0.5, 0)
    assert r["rates"]["neg0"] != r["rates"]["pos0"], "precondition: the swap must change the rate"
    assert r3["rates"]["neg0"] == r["rates"]["pos0"]  # measured on the new model, not read from the cache
    cached = json.loads((tmp_path / "rates" / "ipguard_TL_0.5_seed0.json").read_text())
    assert cached["suspect_sha256"]["neg0"] == "new" and cached["rates"]["neg0"] == r3["rates"]["neg0"]


def test_report_files_and_claims(suspects, tiny_data, tmp_path):
    target, sus = suspects
    sw = Sweep(
        tmp_path / "cache",
        target,
        tiny_data,
        sus,
        n=10,
        progress=False,
        method_params={
            "ipguard": {"learning_rate": 0.01, "max_iter": 60},
            "cw": {"learning_rate": 0.05, "max_iter": 40, "binary_search_steps": 2},
        },
    )
    runs = [
        sw.run(m, s, v)
        for m, s, v in [
            ("random", "RR", None),
            ("fgsm", "TL", 0.05),
            ("igsm", "TL", 0.05),
            ("cw", "TL", 0.0),
            ("ipguard", "TL", 0.5),
            ("ipguard", "TR", 0.5),
        ]
    ]
    pub = {"table4_aruc": {"cifar10": {"ipguard": 0.94}}, "table8_seconds_100_points": {"cifar10": {}}}
    report.write_all(tmp_path / "out", runs, sus, None, {}, pub)
    for f in (
        "sweep.csv",
        "table4.md",
        "matching_rates.md",
        "table8.csv",
        "claims.md",
        "fig6_ipguard.png",
        "fig2_ipguard.png",
    ):
        assert (tmp_path / "out" / f).exists(), f
    claims = report.evaluate_claims(runs, report.best_runs(runs), pub)
    assert {c["claim"] for c in claims} >= {"some threshold gives robustness = uniqueness = 1 for IPGuard"}
    for c in claims:
        assert isinstance(c["holds"], bool) and c["criterion"] and c["measured"]
    # issue 16: every claim judged on the converged points too, and calibrated verdicts at the best settings
    text = (tmp_path / "out" / "claims.md").read_text()
    assert "verdict, converged only" in text and "measured, converged points only" in text
    rows = report.calibration_rows(runs, report.best_runs(runs), sus)
    assert {r["points"] for r in rows} >= {"all"} and all(r["negatives"] == 3 for r in rows)
    for r in rows:
        assert 0 <= r["robustness"] <= 1 and 0 <= r["fpr_in_sample"] <= 1 and 0 <= r["fpr_leave_one_out"] <= 1
        assert r["threshold"] is None or r["threshold"] > r["mean_negative_rate"]
    assert (tmp_path / "out" / "calibration.md").exists()
    partial = [r for r in runs if r["method"] != "cw"]
    claims = report.evaluate_claims(partial, report.best_runs(partial), pub)
    assert any(c["holds"] is None for c in claims), "claims needing CW-L2 are marked not evaluated"


def test_a_cached_fingerprint_counts_only_for_the_target_and_data_it_was_made_from(suspects, tiny_data, tmp_path):
    """A zoo rebuilt under the same names (a new source, new CAE surrogates) must not reuse fingerprints made from
    the old models: the cache records what each fingerprint was made from (Sweep.inputs_sha256)."""
    from ipguard_tf.io.fingerprint_file import load_fingerprint

    target, sus = suspects
    kw = dict(n=6, progress=False)
    path = tmp_path / "fp" / "random_RR_none_seed0.npz"
    Sweep(tmp_path, target, tiny_data, sus, **kw).run("random", "RR", None, 0)
    made = load_fingerprint(path)
    assert made.metadata["inputs_sha256"] == Sweep(tmp_path, target, tiny_data, sus, **kw).inputs_sha256("random")
    Sweep(tmp_path, target, tiny_data, sus, **kw).run("random", "RR", None, 0)
    assert load_fingerprint(path).sha256 == made.sha256  # the same inputs: reused
    other = as_classifier(make_tiny_keras3(77))
    sw = Sweep(tmp_path, other, tiny_data, sus, **kw)
    assert sw.inputs_sha256("random") != made.metadata["inputs_sha256"]
    sw.run("random", "RR", None, 0)
    remade = load_fingerprint(path)
    assert remade.metadata["inputs_sha256"] == sw.inputs_sha256("random")
    assert np.array_equal(remade.y, other.predict_labels(remade.x))  # labelled by the new target
    shifted = Sweep(tmp_path, other, tiny_data[::-1].copy(), sus, **kw)
    assert shifted.inputs_sha256("random") != remade.metadata["inputs_sha256"]  # other data: made again too


def test_sweep_reports_converged_points_only_too(suspects, tiny_data, tmp_path):
    """Issue 16: each run's statistics on all points and on the converged points only, cached like the rest."""
    from ipguard_tf.evaluation.sweep import statistics
    from ipguard_tf.io.fingerprint_file import load_fingerprint

    target, sus = suspects
    kw = dict(n=12, method_params={"ipguard": {"learning_rate": 0.01, "max_iter": 60}}, progress=False)
    r = Sweep(tmp_path, target, tiny_data, sus, **kw).run("ipguard", "TL", 0.1, 0)  # 7 of 12 converge
    fp = load_fingerprint(tmp_path / "fp" / "ipguard_TL_0.1_seed0.npz")
    assert 0 < fp.n_converged < len(fp), "the setting must leave some points unconverged"
    conv = fp.converged_only()
    assert len(conv) == fp.n_converged and conv.converged.all() and "converged only" in conv.metadata["points"]
    assert r["rates_converged"] == statistics(conv, sus) and r["aruc_converged"] is not None
    cached = json.loads((tmp_path / "rates" / "ipguard_TL_0.1_seed0.json").read_text())
    assert cached["rates_converged"] == r["rates_converged"]
    # every point converged (Random): the converged-only numbers are the numbers
    rr = Sweep(tmp_path, target, tiny_data, sus, **kw).run("random", "RR", None, 0)
    assert rr["rates_converged"] == rr["rates"] and rr["aruc_converged"] == rr["aruc"]
    with pytest.raises(Exception, match="none of the fingerprint"):
        fp.subset(~fp.converged).converged_only()


@pytest.mark.parametrize(
    "dataset, title",
    [("cifar10", "CIFAR-10 zoo"), ("fashion_mnist", "Fashion-MNIST zoo"), ("imagenet", "ImageNet zoo")],
)
def test_table2_names_the_zoo_dataset(tmp_path, dataset, title):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    recs = [
        {"name": "target", "role": "target", "family": "target", "test_accuracy": 0.9},
        {"name": "ftll", "role": "positive", "family": "FTLL", "test_accuracy": 0.89},
        {"name": "n1", "role": "negative", "family": "lenet5", "test_accuracy": 0.7},
    ]
    (zoo / "manifest.json").write_text(json.dumps({"schema": "ipguard_tf.zoo/1", "dataset": dataset, "models": recs}))
    report._table2(tmp_path / "out", zoo)
    text = (tmp_path / "out" / "table2.md").read_text()
    assert text.splitlines()[0] == f"# Table 2: test accuracies ({title})"


def test_a_method_draws_from_its_own_data_when_the_sweep_gives_it(suspects, tiny_data, tmp_path):
    """``method_data`` (the SAC benchmark's SAC-m and AKH draw from held-out images, as the official code and QuRD
    do): that method's starts come from its own array, every other method's from the owner's training data."""
    from ipguard_tf.io.fingerprint_file import load_fingerprint

    target, sus = suspects
    held_out = np.random.default_rng(9).random((40,) + tiny_data.shape[1:], dtype=np.float32)
    sw = Sweep(tmp_path, target, tiny_data, sus, n=6, progress=False, method_data={"random": (held_out, None)})
    sw.run("random", "TR", None, 0)
    sw.run("fgsm", "TR", 0.0, 0)  # epsilon 0: the points are the training-image starts
    rand = load_fingerprint(tmp_path / "fp" / "random_TR_none_seed0.npz")
    fgsm = load_fingerprint(tmp_path / "fp" / "fgsm_TR_0_seed0.npz")

    def rows_of(x, pool):
        return all(any(np.array_equal(p, q) for q in pool) for p in x)

    assert rows_of(rand.x, held_out) and rows_of(fgsm.x, tiny_data) and not rows_of(rand.x, tiny_data)


def test_sac_rows_compare_copies_with_negatives_of_their_label_set():
    """SAC compares transfer copies with models trained on the transfer task (``correlation_wrong.py``): the
    transfer rows take the zoo's negatives of that label set, the Table 3 rows the source's; a zoo without
    transfer-task negatives compares the transfer copies with all of them (the earlier rule)."""
    from types import SimpleNamespace

    def s(name, role, family, labels=None):
        return SimpleNamespace(name=name, role=role, family=family, record={"labels": labels} if labels else {})

    coarse = "fashion_mnist_coarse4"
    sus = [
        s("ft", "positive", "finetune_a"),
        s("tr", "positive", "transfer_l", coarse),
        s("irr", "negative", "irrelevant"),
        s("irr_t", "negative", "irrelevant_transfer", coarse),
    ]
    stats = {"ft": 0.01, "tr": 0.02, "irr": 0.5, "irr_t": 0.01}  # SAC distances: lower = copy
    rows = {r["attack"]: r for r in report.attack_rows(stats, sus, higher_is_copy=False)}
    assert rows["Finetune-A"]["n_negative"] == 1 and rows["Finetune-A"]["auc"] == 1.0  # against irr only
    assert rows["Transfer-L"]["n_negative"] == 1 and rows["Transfer-L"]["auc"] == 0.0  # against irr_t only
    del stats["irr_t"]
    rows = {r["attack"]: r for r in report.attack_rows(stats, sus[:3], higher_is_copy=False)}
    assert rows["Transfer-L"]["n_negative"] == 1 and rows["Transfer-L"]["auc"] == 1.0
