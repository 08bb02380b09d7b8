"""The SAC Fashion-MNIST zoo (issue 14) on a tiny profile: every planned member is built and recorded with its
accuracy, agreement and queries; resumable and deterministic; listed and verified through the CLI."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from ipguard_tf.io.data import FASHION_MNIST_DEBIAN_DIR

HAVE_FMNIST = os.path.exists(os.path.join(FASHION_MNIST_DEBIAN_DIR, "train-images-idx3-ubyte.gz")) or bool(
    os.environ.get("IPGUARD_FASHION_MNIST_DIR")
)
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST IDX files not installed")


def _tiny_profile():
    from ipguard_tf.zoo.sac import SACProfile

    return SACProfile(
        "tiny",
        students=("lenet5",),
        source="fmnist_cnn",
        seeds=1,
        source_epochs=8,
        extract_epochs=2,
        adv_epochs=1,
        finetune_epochs=1,
        transfer_epochs=1,
        adv_finetune_epochs=1,
        irrelevant_epochs=2,
        prune_snapshots=4,
        prune_max=0.5,
        pgd_steps=3,
        adv_examples=512,
        subset=1024,
        cae_members=2,
        cae_architectures=("lenet5",),
        irrelevant=1,
        irrelevant_transfer=1,
        prune_finetune_epochs=1,
        max_accuracy_drop=1.0,  # tiny students trained 2 epochs on 1,024 examples: no floor here (tested below)
    )


def _extract_and_verify(zoo, method: str, n: int, seed: int, tmp_path, capsys, extra=()) -> dict:
    """``ipguard extract`` of the zoo's target with ``method``, then ``ipguard verify --json`` over the zoo."""
    from ipguard_tf.cli import main

    fp = tmp_path / f"{method}.npz"
    assert (
        main(
            [
                "-q",
                "extract",
                "--model",
                str(zoo / "target.keras"),
                "--method",
                method,
                "--n",
                str(n),
                "--seed",
                str(seed),
                "--out",
                str(fp),
                *extra,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["-q", "verify", "--fingerprint", str(fp), "--suspect", str(zoo), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def sac_zoo(tmp_path_factory):
    from ipguard_tf.zoo.sac import SACZooBuilder

    out = tmp_path_factory.mktemp("sac") / "zoo"
    b = SACZooBuilder("fashion_mnist", out, _tiny_profile(), verbose=0)
    manifest = b.build()
    return out, manifest, b


@needs_fmnist
def test_every_planned_member_is_recorded(sac_zoo):
    from ipguard_tf.zoo.sac import plan

    out, manifest, _ = sac_zoo
    names = [r["name"] for r in manifest["models"]]
    assert names == [n for n, _, _ in plan(_tiny_profile())]
    fams = {r["family"] for r in manifest["models"]}
    assert fams == {
        "source",
        "extract_l",
        "extract_p",
        "extract_adv",
        "finetune_a",
        "finetune_l",
        "prune",
        "transfer_a",
        "transfer_l",
        "adv_finetune",
        "quantized",
        "irrelevant",
        "irrelevant_transfer",
        "cae_surrogate",
        "cae_reference",
    }
    split = manifest["split"]
    assert split["defender"] == split["attacker"] == 1024 and len(split["indices_sha256"]) == 64
    recs = {r["name"]: r for r in manifest["models"]}
    assert recs["target"]["agreement"] == 1.0 and recs["target"]["test_accuracy"] > 0.3  # chance: 0.1
    for r in manifest["models"]:
        assert 0.0 <= r["test_accuracy"] <= 1.0
        if r["family"].startswith("transfer") or r["family"] == "irrelevant_transfer":
            assert r["agreement"] is None and r["labels"] == "fashion_mnist_coarse4"
        else:
            assert 0.0 <= r["agreement"] <= 1.0
        if r["family"] in ("extract_l", "extract_p", "extract_adv"):
            # SAC's thief asks the victim about every augmented batch: epochs x examples per epoch
            per_epoch = min(1024, r["params"].get("max_examples") or 1024)
            assert r["params"]["augment"] == "crop4zero+flip"
            assert r["queries"] == r["params"]["recipe"]["epochs"] * per_epoch
        assert (out / r["file"]).exists()
    assert [recs[n]["pruned_fraction"] for n in ("prune_01of4", "prune_02of4")] == [0.25, 0.5]
    assert recs["tflite_int8"]["file"].endswith(".tflite")
    assert all(r["build_seconds"] >= 0 for r in manifest["models"])
    # CAE's ensemble: on the defender's half (no evaluated suspect is), roles that are no suspect
    cae = [r for r in manifest["models"] if r["family"].startswith("cae_")]
    assert {(r["role"], r["data"]) for r in cae} == {("surrogate", "defender"), ("reference", "defender")}
    assert all(r["data"] == "attacker" for r in manifest["models"] if r["role"] in ("positive", "negative"))
    assert manifest["complete"] and "ipguard zoo build --kind sac" in manifest["build_command"]


@needs_fmnist
def test_resumed_and_rebuilt_members_are_identical(sac_zoo):
    from ipguard_tf.zoo.members import load_member
    from ipguard_tf.zoo.sac import SACZooBuilder
    from ipguard_tf.zoo.store import read_manifest

    out, manifest, b = sac_zoo
    recs = {r["name"]: r for r in manifest["models"]}
    # a member lost with its record (build killed before it): the resumed build makes it again, the same
    for name in ("extract_p_lenet5_s1", "prune_02of4"):
        (out / recs[name]["file"]).unlink()
    m = json.loads((out / "manifest.json").read_text())
    m["models"] = [r for r in m["models"] if r["name"] not in ("extract_p_lenet5_s1", "prune_02of4")]
    (out / "manifest.json").write_text(json.dumps(m))
    again = SACZooBuilder("fashion_mnist", out, _tiny_profile(), verbose=0).build()
    new = {r["name"]: r for r in again["models"]}
    for name in ("extract_p_lenet5_s1", "prune_02of4"):
        assert new[name]["content_sha256"] == recs[name]["content_sha256"], name
    # a member whose file is gone (not kept in the repository): rebuilt on load, from its record
    (out / recs["extract_adv_lenet5_s1"]["file"]).unlink()
    from ipguard_tf.models.classifier import content_sha256

    model = load_member(out, "extract_adv_lenet5_s1")
    assert content_sha256(model) == recs["extract_adv_lenet5_s1"]["content_sha256"]
    assert read_manifest(out)["kind"] == "sac"


@needs_fmnist
def test_cli_lists_and_verifies_the_sac_zoo(sac_zoo, tmp_path, capsys, caplog):
    from ipguard_tf.cli import main

    out, manifest, _ = sac_zoo
    assert main(["-q", "zoo", "list", str(out)]) == 0
    table = capsys.readouterr().out
    for word in ("extract_adv_lenet5_s1", "tflite_int8", "irrelevant_lenet5_s1", "agreement", "queries", "(4 classes)"):
        assert word in table
    result = _extract_and_verify(out, "random", 10, 1, tmp_path, capsys)
    names = [r["suspect"].rsplit("/", 1)[1] for r in result["suspects"]]
    assert "transfer_a" not in names and "tflite_int8" in names and "irrelevant_lenet5_s1" in names
    assert result["suspects"][names.index("target")]["matching_rate"] == 1.0
    assert "transfer_a skipped" in caplog.text
    assert result["summary"]["n_negative"] == 1


def test_sac_architectures_build_in_keras_3_and_2():
    import tf_keras

    from ipguard_tf.zoo.architectures import SAC_ARCHITECTURES, build_architecture, twin

    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    for name in SAC_ARCHITECTURES:
        m = build_architecture(name, (28, 28, 1), 10)
        assert m.outputs[0].shape[-1] == 10 and m.layers[-1].get_config()["activation"] == "linear", name
        k2 = twin(m, name, (28, 28, 1), 10, tf_keras)
        np.testing.assert_allclose(k2(x, training=False).numpy(), np.asarray(m(x, training=False)), atol=1e-4)


@needs_fmnist
def test_verify_says_what_it_will_rebuild_or_skips_it(sac_zoo, tmp_path, capsys):
    from ipguard_tf.cli import main

    out, manifest, _ = sac_zoo
    fp = tmp_path / "fp.npz"
    assert (
        main(
            [
                "-q",
                "extract",
                "--model",
                str(out / "target.keras"),
                "--method",
                "random",
                "--n",
                "5",
                "--seed",
                "2",
                "--out",
                str(fp),
            ]
        )
        == 0
    )
    (out / "irrelevant_lenet5_s1.keras").unlink()
    capsys.readouterr()
    assert main(["-q", "verify", "--fingerprint", str(fp), "--suspect", str(out), "--no-rebuild", "--json"]) == 0
    cap = capsys.readouterr()
    assert "1 absent members skipped (--no-rebuild): irrelevant_lenet5_s1" in cap.err
    assert all(not r["suspect"].endswith("irrelevant_lenet5_s1") for r in json.loads(cap.out))
    assert not (out / "irrelevant_lenet5_s1.keras").exists()
    assert main(["-q", "verify", "--fingerprint", str(fp), "--suspect", str(out), "--json"]) == 0
    cap = capsys.readouterr()
    assert "1 members absent, rebuilt before use (about" in cap.err and "irrelevant_lenet5_s1" in cap.err
    assert (out / "irrelevant_lenet5_s1.keras").exists()


@needs_fmnist
def test_sac_m_compares_transfer_models_in_the_cli_and_the_sweep(sac_zoo, tmp_path, capsys):
    """A SAC-m fingerprint compares every member, the transfer models to another label set too (SAC Table 5),
    through the CLI and the sweep; a matching rate leaves them out. The sweep records each statistic with its
    direction, and the SAC table gets the transfer rows for SAC-m only."""
    from ipguard_tf.evaluation import report
    from ipguard_tf.evaluation.sweep import Sweep, load_zoo_suspects, strategies_for
    from ipguard_tf.zoo.members import load_member
    from ipguard_tf.zoo.sac import sac_split

    out, manifest, b = sac_zoo
    res = _extract_and_verify(out, "sac-m", 20, 0, tmp_path, capsys)
    by = {r["suspect"].rsplit("/", 1)[1]: r for r in res["suspects"]}
    assert by["target"]["value"] == pytest.approx(0.0, abs=1e-6) and "transfer_a" in by
    assert by["target"]["statistic"] == "sac_distance"

    sus = load_zoo_suspects(out, other_label_sets=True)
    defender = sac_split(b._data(), subset=_tiny_profile().subset).defender
    sw = Sweep(
        tmp_path / "sweep", load_member(out, "target"), defender.x, sus, n=20, progress=False, train_y=defender.y
    )
    assert strategies_for("sac-m", ["TL"]) == ["-"] and strategies_for("ipguard", ["TL"]) == ["TL"]
    sac = sw.run("sac-m", "-", None)
    rnd = sw.run("random", "RR", None)
    assert "transfer_a" in sac["rates"] and "transfer_a" not in rnd["rates"]
    assert sac["higher_is_copy"] is False and rnd["higher_is_copy"] is True
    assert sac["rates"]["transfer_a"] >= 0.0 and sac["statistic"] == "sac_distance"
    published = json.loads(
        (Path(__file__).resolve().parents[1] / "experiments" / "published" / "sac_appendix.json").read_text()
    )
    rows = {(r["attack"], r["method"]) for r in report.sac_table({"sac-m": sac, "random": rnd}, sus, published)}
    assert ("Transfer-A", "SAC-m") in rows and ("Transfer-A", "Random") not in rows
    assert ("Extract-L", "Random") in rows


@needs_fmnist
def test_cae_through_the_cli_takes_its_ensemble_from_the_zoo(sac_zoo, tmp_path, capsys):
    """``ipguard extract --method cae --cae-zoo ZOO``: the zoo's surrogates and references, recorded in the file;
    zoo verification leaves them out (they are the method's own models, not suspects)."""
    from ipguard_tf.io.fingerprint_file import load_fingerprint

    out, manifest, _ = sac_zoo
    result = _extract_and_verify(out, "cae", 10, 0, tmp_path, capsys, ["--cae-zoo", str(out), "--cae-tau", "0"])
    fp = load_fingerprint(tmp_path / "cae.npz")
    ens = fp.metadata["ensemble"]
    assert [m["name"] for m in ens["surrogates"]] == ["cae_surrogate_lenet5_s1", "cae_surrogate_lenet5_s2"]
    assert [m["name"] for m in ens["references"]] == ["cae_reference_lenet5_s1", "cae_reference_lenet5_s2"]
    assert fp.metadata["params"]["tau"] == 0.0 and np.all(fp.y != fp.source) and 0 < len(fp) <= 10
    names = [r["suspect"].rsplit("/", 1)[1] for r in result["suspects"]]
    assert not any(n.startswith("cae_") for n in names) and "extract_l_lenet5_s1" in names
    assert result["suspects"][names.index("target")]["matching_rate"] == 1.0


@needs_fmnist
def test_a_stolen_model_under_the_floor_is_rejected_not_counted(sac_zoo, tmp_path):
    """A copy that no longer does its job (test accuracy more than the profile's drop below the source's) is
    recorded in ``rejected`` with its accuracy, never stored nor counted, and not made again (issue 31)."""
    import shutil
    from dataclasses import replace

    from ipguard_tf.zoo.architectures import build_architecture
    from ipguard_tf.zoo.sac import SACZooBuilder
    from ipguard_tf.zoo.store import read_manifest

    out, manifest, _ = sac_zoo
    zoo = tmp_path / "zoo"
    shutil.copytree(out, zoo)
    m = read_manifest(zoo)
    assert m["accuracy_floor"]["max_drop"] == 1.0
    m["models"] = [r for r in m["models"] if r["name"] != "prune_02of4"]
    (zoo / "manifest.json").write_text(json.dumps(m))
    (zoo / "prune_02of4.keras").unlink()
    b = SACZooBuilder("fashion_mnist", zoo, replace(_tiny_profile(), max_accuracy_drop=0.1), verbose=0)
    b.start()
    floor = b.accuracy_floor()
    assert floor == pytest.approx(b.record("target")["test_accuracy"] - 0.1, abs=1e-4)
    info = dict(role="positive", family="prune", architecture="fmnist_cnn", data="attacker", params={}, seed=0)
    dead = build_architecture("fmnist_cnn", (28, 28, 1), 10)  # untrained: about chance
    assert b._store("prune_02of4", dead, dict(info, pruned_fraction=0.5)) is None
    on_disk = read_manifest(zoo)
    rej = {r["name"]: r for r in on_disk["rejected"]}["prune_02of4"]
    assert rej["test_accuracy"] < floor == rej["floor"] and "not a usable copy" in rej["reason"]
    assert rej["pruned_fraction"] == 0.5 and rej["family"] == "prune"
    assert "prune_02of4" not in {r["name"] for r in on_disk["models"]} and not (zoo / "prune_02of4.keras").exists()
    assert "prune_02of4" not in [p.name for p in b.pending()] and b.build_member("prune_02of4") is False
    # a negative is no stolen model: stored whatever its accuracy
    assert b._store("irrelevant_dead", dead, dict(info, role="negative", family="irrelevant")) is not None


@needs_fmnist
def test_a_zoo_counting_a_copy_under_its_floor_is_refused(sac_zoo, tmp_path):
    """The sweep and ``verify`` load a zoo's suspects through :func:`load_zoo_suspects`: a positive under the
    zoo's recorded floor (a zoo built before the floor, or edited) stops it with the members named."""
    import shutil

    from ipguard_tf.evaluation.sweep import check_accuracy_floor, load_zoo_suspects
    from ipguard_tf.zoo.store import ZooError, read_manifest

    out, _, _ = sac_zoo
    zoo = tmp_path / "zoo"
    shutil.copytree(out, zoo)
    check_accuracy_floor(zoo)  # the tiny zoo's floor (drop 1.0) holds
    m = read_manifest(zoo)
    m["accuracy_floor"] = {"max_drop": 0.1, "floor": 0.5}
    for r in m["models"]:
        if r["name"] == "prune_02of4":
            r["test_accuracy"] = 0.1
        elif r["role"] == "positive":
            r["test_accuracy"] = max(r["test_accuracy"], 0.5)
    (zoo / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ZooError, match=r"1 stolen model\(s\) under the zoo's accuracy floor 0.5000.*prune_02of4"):
        load_zoo_suspects(zoo)


@needs_fmnist
def test_full_profile_has_sacbench_counts_and_a_cost_printed_before_it_starts(tmp_path, capsys):
    """Issue 32: the ``full`` profile is SACBench's zoo (30 irrelevant, 10 fine-tuned, 10 fine-pruned, 20 transfer,
    20 of each extraction); a SAC build says how many members it will make and about how long before it starts."""
    from collections import Counter

    from ipguard_tf.cli.zoo import sac_cost_line
    from ipguard_tf.zoo.sac import SAC_PROFILES, SACZooBuilder, estimate_seconds, plan

    recs = [r for _, r, _ in plan(SAC_PROFILES["full"])]
    fams = Counter(r["family"] for r in recs)
    assert fams["irrelevant"] == 30 and fams["prune"] == 10
    assert fams["finetune_a"] + fams["finetune_l"] == 10 and fams["transfer_a"] + fams["transfer_l"] == 20
    assert fams["extract_l"] == fams["extract_p"] == fams["extract_adv"] == 20
    assert len({r["architecture"] for r in recs if r["family"] == "irrelevant"}) == 4
    names = [n for n, _, _ in plan(SAC_PROFILES["full"])]
    assert len(names) == len(set(names)) and "finetune_a_s5" in names and "transfer_l_s10" in names
    assert [n for n, _, _ in plan(SAC_PROFILES["quick"])].count("finetune_a") == 1  # the committed zoo's names
    full, quick = estimate_seconds(SAC_PROFILES["full"]), estimate_seconds(SAC_PROFILES["quick"])
    assert 50 * quick < full  # SAC's 200 extraction epochs, 4 families x 5 seeds
    line = sac_cost_line(SACZooBuilder("fashion_mnist", tmp_path / "z", _tiny_profile(), verbose=0))
    n = len(plan(_tiny_profile()))
    assert f"profile tiny: {n} members, {n} to build; about " in line and "CPU-hours" in line


def test_the_committed_sac_zoo_counts_no_copy_under_its_floor():
    """pretrained/sac_fashion_mnist: built with the floor (10 points below the source), every positive above it
    (a transfer model on its own 4 classes), the rejected ones recorded with their accuracies; at least 10
    irrelevant models of the three student families."""
    from ipguard_tf.core.constants import STOLEN_MAX_ACCURACY_DROP
    from ipguard_tf.evaluation.sweep import check_accuracy_floor
    from ipguard_tf.zoo.store import read_manifest

    zoo = Path(__file__).resolve().parents[1] / "pretrained" / "sac_fashion_mnist"
    m = read_manifest(zoo)
    recs = {r["name"]: r for r in m["models"]}
    assert m["accuracy_floor"]["max_drop"] == STOLEN_MAX_ACCURACY_DROP
    assert m["accuracy_floor"]["floor"] == pytest.approx(recs["target"]["test_accuracy"] - STOLEN_MAX_ACCURACY_DROP)
    check_accuracy_floor(zoo)
    assert all(r["test_accuracy"] < m["accuracy_floor"]["floor"] for r in m["rejected"])
    irrelevant = [r for r in m["models"] if r["family"] == "irrelevant"]
    assert len(irrelevant) >= 10 and len({r["architecture"] for r in irrelevant}) == 3


@needs_fmnist
def test_members_made_otherwise_than_the_plan_are_stale_and_rebuilt_only_when_asked(sac_zoo, tmp_path):
    """A recipe changed since a zoo was built (here: fine-tuning epochs, extraction epochs, the attacker's
    augmentation) makes its members stale: a build stops with a one-line error unless asked to rebuild them, and then
    rebuilds exactly those (and what was made from them), leaving the others' files as they were."""
    import shutil
    from dataclasses import replace

    from ipguard_tf.zoo.sac import SACZooBuilder
    from ipguard_tf.zoo.store import ZooError, file_sha256, read_manifest

    out, manifest, _ = sac_zoo
    zoo = tmp_path / "zoo"
    shutil.copytree(out, zoo)
    same = SACZooBuilder("fashion_mnist", zoo, _tiny_profile(), verbose=0)
    same._load_state()
    assert same.stale() == {}
    longer = replace(_tiny_profile(), extract_epochs=3)
    b = SACZooBuilder("fashion_mnist", zoo, longer, verbose=0)
    b._load_state()
    stale = b.stale()
    assert (
        set(stale)
        == {"extract_l_lenet5_s1", "extract_p_lenet5_s1", "extract_adv_lenet5_s1"}
        | {
            n
            for n in stale
            if n.startswith("cae_surrogate")  # CAE's surrogates copy the thief's Extract-L recipe
        }
        and len([n for n in stale if n.startswith("cae_surrogate")]) == 2
    )
    assert "made from extract_l_lenet5_s1" in stale["extract_adv_lenet5_s1"]  # its own params are unchanged
    plain = SACZooBuilder("fashion_mnist", zoo, replace(_tiny_profile(), attacker_augment=None), verbose=0)
    plain._load_state()
    assert {"extract_l_lenet5_s1", "finetune_a", "prune_01of4", "cae_surrogate_lenet5_s1"} <= set(plain.stale())
    assert "irrelevant_lenet5_s1" not in plain.stale() and "transfer_a" not in plain.stale()

    # the files' own hashes (a member rebuilt on load by an earlier test has the recorded content, other bytes)
    before = {r["name"]: file_sha256(zoo / r["file"]) for r in read_manifest(zoo)["models"]}
    ft = replace(_tiny_profile(), finetune_epochs=2)
    with pytest.raises(ZooError, match=r"2 members were made otherwise .* --rebuild-stale"):
        SACZooBuilder("fashion_mnist", zoo, ft, verbose=0).build()
    assert {r["name"]: file_sha256(zoo / r["file"]) for r in read_manifest(zoo)["models"]} == before  # untouched
    m = read_manifest(zoo)
    m["models"] = [dict(r, in_repo=False) if r["name"] == "finetune_a" else r for r in m["models"]]
    (zoo / "manifest.json").write_text(json.dumps(m))  # as a member pretrained/ leaves out
    m = SACZooBuilder("fashion_mnist", zoo, ft, verbose=0, rebuild_stale=True).build()
    recs = {r["name"]: r for r in m["models"]}
    assert recs["finetune_a"]["in_repo"] is False and recs["finetune_l"]["in_repo"] is True  # stays out when rebuilt
    assert recs["finetune_a"]["params"]["recipe"]["epochs"] == recs["finetune_l"]["params"]["recipe"]["epochs"] == 2
    kept = [n for n in before if n not in ("finetune_a", "finetune_l")]
    assert [n for n in kept if file_sha256(zoo / recs[n]["file"]) != before[n]] == []
    assert [r["name"] for r in m["models"]].count("finetune_a") == 1 and m["complete"]


@needs_fmnist
def test_a_member_made_from_a_rejected_copy_is_made_from_it_and_judged_itself(sac_zoo, tmp_path):
    """An Extract-L student under the floor is not stored, yet SAC trains its Extract-Adv student on from it: the
    builder keeps the rejected model for that (or makes it again in a new process) and judges the result."""
    import shutil
    from dataclasses import replace

    from ipguard_tf.zoo.sac import SACZooBuilder
    from ipguard_tf.zoo.store import read_manifest

    out, _, _ = sac_zoo
    zoo = tmp_path / "zoo"
    shutil.copytree(out, zoo)
    m = read_manifest(zoo)
    gone = ("extract_l_lenet5_s1", "extract_adv_lenet5_s1")
    m["models"] = [r for r in m["models"] if r["name"] not in gone]
    (zoo / "manifest.json").write_text(json.dumps(m))
    for name in gone:
        (zoo / f"{name}.keras").unlink()
    strict = replace(_tiny_profile(), max_accuracy_drop=-1.0)  # a floor above the source: every copy is rejected
    b = SACZooBuilder("fashion_mnist", zoo, strict, verbose=0)
    b.start()
    assert b.build_member("extract_l_lenet5_s1") is False and "extract_l_lenet5_s1" in b._rejected_models
    assert b.build_member("extract_adv_lenet5_s1") is False  # made, then judged under the floor itself
    assert {r["name"] for r in read_manifest(zoo)["rejected"]} >= set(gone)
    m = read_manifest(zoo)
    m["rejected"] = [r for r in m["rejected"] if r["name"] != "extract_adv_lenet5_s1"]
    (zoo / "manifest.json").write_text(json.dumps(m))
    again = SACZooBuilder("fashion_mnist", zoo, strict, verbose=0)  # a new process: the student made again
    again.start()
    assert again.build_member("extract_adv_lenet5_s1") is False and "extract_l_lenet5_s1" in again._rejected_models
    assert not any((zoo / f"{n}.keras").exists() for n in gone)
