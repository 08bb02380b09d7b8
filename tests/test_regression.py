"""Regression against the published numbers (experiments/published/ipguard_paper.json).

Tolerances (stated once here):
* CIFAR-10/100/ImageNet (paper Table 4): each method's best ARUC within 0.10 of the paper's, and the paper's
  ordering (IPGuard and CW-L2 above FGSM, IGSM and Random) kept. Skipped when no results directory exists.
* Fashion-MNIST (SAC appendix Table 3, IPGuard column, AUC of stolen vs irrelevant models): fine-tuning and
  pruning AUC >= published - 0.05, on the committed results.
* SAC benchmark (experiments/results/sac_fashion_mnist, SAC appendix Table 3 on the SAC zoo): every row of the
  committed sac_table3.csv is recomputed from the committed per-suspect statistics (matching_rates.csv) and the
  zoo manifest, equal to 1e-9 (independent of the CPU: nothing is regenerated), and each verdict is the one the
  stated tolerance (published ``tolerance_auc``, 0.10) gives against SAC's number.
* CI slice: IPGuard-TL at k = 1 recomputed from pretrained/ on a few suspects. What is promised (README,
  "Reproducibility"): on the same platform (CPU model, kernel-relevant instruction sets, caches, cores, library
  versions; :func:`ipguard_tf.io.env_info.platform_key`) the points are bit-identical, so where a committed
  reference was made on this platform the points hash and every rate must be equal; on any other machine every
  matching rate is within the tolerance measured between two CPUs (experiments/results/cross_machine: the
  largest difference over all 24 IPGuard runs and 35 stored suspects, Intel Xeon vs AMD EPYC).
* TAFA (reconstructed, no published numbers): each committed summary recomputed from its rates.csv (4 decimals
  there: AUC and ARUC within 0.02, gap within 1e-4, robustness/uniqueness exact), and the held-out prediction
  fixed before that run.
"""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = json.loads((ROOT / "experiments" / "published" / "ipguard_paper.json").read_text())
RESULTS = ROOT / "experiments" / "results"


def _table4(ds):
    import csv

    p = RESULTS / ds / "table4.csv"
    if not p.exists():
        pytest.skip(
            f"no {ds} results in {p.parent} (they need the dataset and a GPU-class machine; run "
            f"experiments/reproduce.py there)"
        )
    with open(p) as fh:
        return {r["method"]: float(r["best_aruc"]) for r in csv.DictReader(fh)}


@pytest.mark.parametrize("ds", ["cifar10", "cifar100", "imagenet"])
def test_table4_against_paper(ds):
    ours = _table4(ds)
    paper = PUBLISHED["table4_aruc"][ds]
    names = {"Random": "random", "FGSM": "fgsm", "IGSM": "igsm", "CW-L2": "cw", "IPGuard": "ipguard"}
    for name, v in ours.items():
        assert abs(v - paper[names[name]]) <= 0.10, (name, v, paper[names[name]])
    assert min(ours["IPGuard"], ours["CW-L2"]) > max(ours["FGSM"], ours["IGSM"], ours["Random"])


def _fmnist_rates():
    import csv

    p = RESULTS / "fashion_mnist" / "matching_rates.csv"
    if not p.exists():
        pytest.skip(f"Fashion-MNIST results not committed yet ({p}); run experiments/reproduce.py")
    with open(p) as fh:
        return list(csv.DictReader(fh))


def test_fashion_mnist_sac_table3_ipguard():
    from ipguard_tf.core.metrics import auc

    rows = _fmnist_rates()
    neg = [float(r["ipguard"]) for r in rows if r["role"] == "negative"]
    groups = {"Finetune-A": ["FTAL"], "Finetune-L": ["FTLL"], "Pruning": ["WP", "FP"]}
    sac = json.loads((ROOT / "experiments" / "published" / "sac_appendix.json").read_text())
    for attack, fams in groups.items():
        pos = [float(r["ipguard"]) for r in rows if r["role"] == "positive" and r["label"].split(" ")[0] in fams]
        assert pos, attack
        assert auc(pos, neg) >= sac["table3_fashion_mnist"]["rows"][attack]["IPGuard"] - 0.05, attack


@pytest.mark.parametrize("name, full", [("sac_fashion_mnist", True), ("fashion_mnist", False)])
def test_sac_benchmark_table_recomputes_and_its_verdicts_hold(name, full):
    """SAC's Table 3 on the SAC zoo (every attack) and on the IPGuard paper's zoo (the attacks it has: FTAL,
    FTLL, WP/FP; issue 15's rows for CAE, SAC-m and SAC-w there)."""
    import csv

    from ipguard_tf.evaluation import report
    from ipguard_tf.evaluation.sweep import Suspect, suspect_label
    from ipguard_tf.zoo.store import members

    folder = RESULTS / name
    if not (folder / "sac_table3.csv").exists():
        pytest.skip(
            "SAC benchmark results not committed yet; run experiments/reproduce.py with "
            "experiments/configs/sac_fashion_mnist.json"
        )
    run = json.loads((folder / "run.json").read_text())
    cfg = run["config"]["config"]
    sac = json.loads((ROOT / "experiments" / "published" / "sac_appendix.json").read_text())
    recs = {r["name"]: r for r in members(ROOT / cfg["zoo"])}
    with open(folder / "matching_rates.csv") as fh:
        stats = list(csv.DictReader(fh))
    suspects = [
        Suspect(
            r["suspect"],
            r["role"],
            recs[r["suspect"]]["family"],
            suspect_label(recs[r["suspect"]]),
            None,
            recs[r["suspect"]],
        )
        for r in stats
    ]
    from ipguard_tf.core import registry

    best = {}
    for m in cfg["grids"]:
        stat = registry.get(m).statistic
        best[m] = {
            "rates": {r["suspect"]: float(r[m]) for r in stats if r[m] not in ("-", "")},
            "higher_is_copy": stat.higher_is_copy,
            "statistic": stat.name,
        }
    again = {(r["attack"], r["method"]): r for r in report.sac_table(best, suspects, sac)}
    with open(folder / "sac_table3.csv") as fh:
        committed = list(csv.DictReader(fh))
    assert {(r["attack"], r["method"]) for r in committed} == set(again)
    # SAC Table 3 in full on the SAC zoo: its three methods on its six attacks and the average; on the IPGuard
    # zoo the attacks it has
    attacks = set(report.SAC_ATTACKS) | {"Average"} if full else {"Finetune-A", "Finetune-L", "Pruning"}
    for m in ("IPGuard", "CAE", "SAC-m"):
        assert {r["attack"] for r in committed if r["method"] == m} >= attacks, m
    for r in committed:
        a = again[(r["attack"], r["method"])]
        assert abs(float(r["auc"]) - a["auc"]) <= 1e-9, (r["attack"], r["method"])
        assert r["verdict"] == a["verdict"]
        if r["sac"] not in ("", "None"):
            holds = abs(a["auc"] - float(r["sac"])) <= sac["tolerance_auc"]
            assert r["verdict"] == ("holds" if holds else "does not hold"), (r["attack"], r["method"])


def _references():
    """(results folder, its platform key or None) of every committed sweep that holds the CI slice's rates."""
    out = []
    for folder in (RESULTS / "fashion_mnist", RESULTS / "cross_machine"):
        if (folder / "cache" / "rates" / "ipguard_TL_1_seed0.json").exists():
            out.append((folder, json.loads((folder / "run.json").read_text()).get("platform")))
    return out


def test_ci_slice_recomputes_committed_numbers():
    cfg_path = ROOT / "experiments" / "configs" / "fashion_mnist_ci.json"
    cfg = json.loads(cfg_path.read_text())
    refs = _references()
    if not refs:
        pytest.skip("Fashion-MNIST results not committed yet")
    if not (
        os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
        or os.environ.get("IPGUARD_FASHION_MNIST_DIR")
    ):
        pytest.skip("Fashion-MNIST not installed")
    from ipguard_tf.evaluation.sweep import Sweep, load_zoo_suspects
    from ipguard_tf.io.data import load_fashion_mnist
    from ipguard_tf.io.env_info import platform_key
    from ipguard_tf.zoo.members import load_member

    zoo = ROOT / cfg["zoo"]
    suspects = load_zoo_suspects(zoo, names=cfg["suspects"])
    ds = load_fashion_mnist()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        r = Sweep(
            Path(tmp),
            load_member(zoo, "target"),
            ds.x_train,
            suspects,
            n=cfg["n"],
            progress=False,
            method_params=cfg["method_params"],
        ).run("ipguard", "TL", 1, cfg["seed"])
        here = json.loads((Path(tmp) / "rates" / "ipguard_TL_1_seed0.json").read_text())["points_sha256"]
    tolerance = json.loads((RESULTS / "cross_machine" / "summary.json").read_text())["tolerance"]
    assert 0 < tolerance <= 0.1
    me = platform_key()
    for folder, platform in refs:
        committed = json.loads((folder / "cache" / "rates" / "ipguard_TL_1_seed0.json").read_text())
        want = committed["rates"]
        if platform == me:  # the promise on one platform: bit-identical points, identical rates
            assert here == committed["points_sha256"], f"points differ from {folder.name}'s on the same platform"
            assert {n: want[n] for n in r["rates"]} == r["rates"]
        for name, rate in r["rates"].items():
            assert abs(rate - want[name]) <= tolerance + 1e-9, (folder.name, name, rate, want[name], tolerance)


# -- anti-piracy transform (Chen & Wu 2018 slides; issue 17) ----------------------------------------------------
ANTIPIRACY = RESULTS / "antipiracy_fashion_mnist"


def test_antipiracy_published_numbers_are_the_slides():
    """The published data holds both copies of the pair-attack slide (they disagree on the 50 % best value)."""
    pub = json.loads((ROOT / "experiments" / "published" / "antipiracy_slides.json").read_text())
    assert pub["performance_table"]["columns"]["fashion_mnist_resnet20"]["baseline"] == 92.63
    assert pub["attack_table_fashion_mnist_resnet20"]["pair_generator"]["0.5"]["best"] == [84.17, 81.11]
    assert pub["tolerance"] == {**pub["tolerance"], "authorized_points": 1.5, "unauthorized_below": 10.0}


def test_antipiracy_table_verdicts_follow_the_published_numbers():
    """Each committed row's verdict is the one the issue's bar gives: authorised within 1.5 points of the slides',
    unauthorised below 10 %; the attack rows within the stated 10 points. Recomputed from the committed numbers."""
    import csv

    p = ANTIPIRACY / "table.csv"
    if not p.exists():
        pytest.skip("anti-piracy results not committed yet; run experiments/antipiracy.py")
    pub = json.loads((ROOT / "experiments" / "published" / "antipiracy_slides.json").read_text())
    cols = pub["performance_table"]["columns"]
    with open(p) as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    for r in rows:
        col = cols[f"fashion_mnist_{r['architecture']}"]
        slide = col["baseline"] if r["transform"] == "none" else col[r["transform"]][0]
        assert float(r["published_authorized"]) == slide
        holds = abs(float(r["authorized"]) - slide) <= 1.5 and (
            r["transform"] == "none" or float(r["unauthorized"]) < 10.0
        )
        assert r["verdict"].startswith("holds") == holds, r
    a = ANTIPIRACY / "attacks.csv"
    if a.exists():
        with open(a) as fh:
            for r in csv.DictReader(fh):
                if r["published"] in ("-", ""):
                    continue
                pubs = [float(v) for v in r["published"].split(" / ")]
                ok = any(abs(float(r["accuracy"]) - v) <= 10.0 for v in pubs)
                assert r["verdict"].startswith("agrees") == ok, r


def test_antipiracy_results_are_complete_and_come_from_the_cached_attacks():
    """Issue 17's table is whole (both architectures, four models each) and every attack row is the committed
    cached result of the model it names (the cache folder carries the model's SHA-256 prefix)."""
    import csv

    if not (ANTIPIRACY / "attacks.csv").exists():
        pytest.skip("anti-piracy results not committed yet; run experiments/antipiracy.py")
    with open(ANTIPIRACY / "table.csv") as fh:
        assert {(r["architecture"], r["transform"]) for r in csv.DictReader(fh)} == {
            (a, t) for a in ("simple_cnn", "resnet20") for t in ("none", "fixed", "learned", "generator")
        }
    run = json.loads((ANTIPIRACY / "run.json").read_text())
    assert "resnet20" in run["command"] and any("simple_cnn" in r["command"] for r in run["previous_runs"])
    with open(ANTIPIRACY / "attacks.csv") as fh:
        rows = list(csv.DictReader(fh))
    seen = set()
    for r in rows:
        sha = json.loads((ANTIPIRACY / "models" / f"{r['architecture']}_{r['transform']}" / "train.json").read_text())[
            "model_sha256"
        ]
        cache = ANTIPIRACY / "cache" / f"{r['architecture']}_{r['transform']}_{sha[:12]}"
        if r["threat"] == "direct piracy":
            name, key = ("raw_classes.json", "top_share") if r["statistic"] else ("direct.json", "accuracy")
        elif r["threat"] == "input-only":
            name, key = "input_only.json", r["statistic"]
        else:
            frac = float(r["threat"].split()[1].rstrip("%")) / 100
            name, key = f"pair_{frac:g}.json", r["statistic"]
        assert float(r["accuracy"]) == round(100 * json.loads((cache / name).read_text())[key], 2), r
        seen.add((r["architecture"], r["transform"], r["threat"]))
    assert len(seen) == 2 * 3 * 5


# -- TAFA, reconstructed (issue 18): no published numbers; the committed summaries must follow from the committed
# per-suspect statistics, and the held-out run's pre-registered prediction must hold ------------------------------
@pytest.mark.parametrize("run", ["tafa_fashion_mnist", "tafa_fashion_mnist_heldout"])
def test_tafa_summary_recomputes_from_the_committed_rates(run):
    """Every summary row (AUC, ARUC, gap, robustness/uniqueness at the default threshold) recomputed from
    rates.csv (rounded there to 4 decimals, hence the tolerances; nothing is regenerated, so independent of the
    CPU)."""
    import csv

    from ipguard_tf.core import metrics

    folder = RESULTS / run
    if not (folder / "summary.csv").exists():
        pytest.skip(f"{run} not committed; run experiments/tafa.py")
    with open(folder / "rates.csv") as fh:
        rates = list(csv.DictReader(fh))
    with open(folder / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    assert summary
    for s in summary:
        pos = [float(r[s["statistic"]]) for r in rates if r["task"] == s["task"] and r["role"] == "positive"]
        neg = [float(r[s["statistic"]]) for r in rates if r["task"] == s["task"] and r["role"] == "negative"]
        # rates.csv is rounded to 4 decimals: the AUC (ranks) is exact unless ties were created, the others close
        assert float(s["auc"]) == pytest.approx(metrics.auc(pos, neg), abs=0.02), s
        assert float(s["aruc"]) == pytest.approx(metrics.aruc(pos, neg), abs=0.02), s
        assert float(s["gap"]) == pytest.approx(metrics.gap(pos, neg), abs=1e-4), s
        if s["threshold"]:
            t = float(s["threshold"])
            assert float(s["robustness"]) == pytest.approx(metrics.robustness(pos, t), abs=1e-9), s
            assert float(s["uniqueness"]) == pytest.approx(metrics.uniqueness(neg, t), abs=1e-9), s


def test_tafa_heldout_prediction():
    """The held-out check fixed before it ran (experiments/results/tafa_fashion_mnist/NOTES.md): the output
    correlation at 0.6 separates the fresh regressors and generators (robustness = uniqueness = 1) and keeps
    uniqueness 1 on the classifier."""
    import csv

    p = RESULTS / "tafa_fashion_mnist_heldout" / "summary.csv"
    if not p.exists():
        pytest.skip("held-out TAFA run not committed")
    with open(p) as fh:
        rows = {(r["task"], r["statistic"]): r for r in csv.DictReader(fh)}
    for task in ("regressor", "generator"):
        r = rows[(task, "output_correlation")]
        assert float(r["threshold"]) == 0.6 and float(r["robustness"]) == 1.0 and float(r["uniqueness"]) == 1.0
    assert float(rows[("classifier", "output_correlation")]["uniqueness"]) == 1.0
