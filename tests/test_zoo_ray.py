"""Zoo builds on Ray (issue 32, ``ipguard zoo build --ray``): the engine changes nothing in the zoo, present members
are not made again, an interrupted or failed build keeps what finished and a restart makes only the rest, and a
member's exception is one line. A local Ray of 2 CPUs for the whole module; the toy task of tests/test_zoo.py."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from conftest import toy_zoo_dataset  # noqa: E402

from ipguard_tf.io.data import FASHION_MNIST_DEBIAN_DIR, Dataset  # noqa: E402
from ipguard_tf.zoo.builder import MAKERS, Profile, ZooBuilder  # noqa: E402
from ipguard_tf.zoo.parallel import RayBuild, build_on_ray, tasks_of  # noqa: E402
from ipguard_tf.zoo.store import ZooError, read_manifest  # noqa: E402

SHAPE = (28, 28, 1)
#: target, FTLL/FTAL/RTLL/RTAL, a WP and an FP level, TFLite float16/int8, a forest, CAE's surrogate (a student of
#: the target) and reference (trained from scratch): 12 members, every way a member is made, in about 30 s
SMALL = Profile("ray", same_arch=0, lenet5=0, vgg16=0, forests=1, max_wp=0.1, max_fp_sixteenths=1, cae_members=1)
#: the target and what is made from it only (7 members)
MICRO = Profile("ray_micro", same_arch=0, lenet5=0, vgg16=0, forests=0, max_wp=0.0, max_fp_sixteenths=0, cae_members=0)
HAVE_FMNIST = (Path(FASHION_MNIST_DEBIAN_DIR) / "train-images-idx3-ubyte.gz").exists() or bool(
    os.environ.get("IPGUARD_FASHION_MNIST_DIR")
)
#: what a record says about how its member was made (besides when, how long it took and its file's bytes)
RECIPE_KEYS = ("role", "family", "architecture", "recipe", "params", "seed", "maker", "file", "sparsity", "fraction")


def toy_dataset() -> Dataset:
    """tests/test_zoo.py's toy task (conftest.toy_zoo_dataset)."""
    return toy_zoo_dataset()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ds():
    return toy_dataset()


@pytest.fixture(scope="module")
def serial_zoo(ds, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "zoo"
    return out, ZooBuilder("fashion_mnist", out, SMALL, dataset=ds, verbose=0).build()


@pytest.fixture(scope="module")
def ray_zoo(ds, local_ray, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "zoo"
    run = RayBuild(ZooBuilder("fashion_mnist", out, SMALL, dataset=ds, verbose=0))
    return out, run.run(), run


def _records(manifest):
    return {r["name"]: r for r in manifest["models"]}


def test_bit_identical_with_equal_threads(ray_zoo, ds, tmp_path):
    """With TensorFlow on one thread, as in the Ray workers, a serial build in another process makes the target and
    a copy made from it bit-identical (content SHA-256) to the Ray build's."""
    out, on_ray, _ = ray_zoo
    np.savez(tmp_path / "ds.npz", x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(1)
        from ipguard_tf.io.data import Dataset
        from ipguard_tf.zoo.builder import Profile, ZooBuilder
        d = np.load({str(tmp_path / "ds.npz")!r})
        ds = Dataset("fashion_mnist", d["x_train"], d["y_train"], d["x_test"], d["y_test"], 10)
        b = ZooBuilder("fashion_mnist", {str(tmp_path / "zoo")!r}, Profile(**{SMALL.__dict__!r}), dataset=ds, verbose=0)
        b.start()
        for name in ("target", "ftll"):
            b.build_member(name)
        print(json.dumps({{n: b.record(n)["content_sha256"] for n in ("target", "ftll")}}))
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    hashes = json.loads(r.stdout.strip().splitlines()[-1])
    recs = _records(on_ray)
    assert hashes == {n: recs[n]["content_sha256"] for n in hashes}


def test_ray_build_matches_serial(serial_zoo, ray_zoo):
    """The same zoo, serially and on Ray: the same members in the same order, made the same way (role, family,
    recipe or parameters, seed), with the same accuracies within 0.05, the same rejected pruning levels, and
    every member made in a worker (2 of them). TensorFlow's training is not bit-identical across these two
    builds: a worker runs TensorFlow on its task's CPUs (1 thread here), the serial build on all the machine's,
    and a sum split over another number of threads rounds differently in the last bits, which grow through
    training. The forest (scikit-learn, thread-independent) is bit-identical; that a TensorFlow member is too
    when the thread counts are equal is :func:`test_bit_identical_with_equal_threads`."""
    _, serial = serial_zoo
    out, on_ray, run = ray_zoo
    assert [r["name"] for r in on_ray["models"]] == [r["name"] for r in serial["models"]]
    assert on_ray["complete"] and on_ray.get("rejected", []) == serial.get("rejected", [])
    a, b = _records(serial), _records(on_ray)
    for name, rec in a.items():
        for key in RECIPE_KEYS:
            assert b[name].get(key) == rec.get(key), (name, key)
        assert abs(b[name]["test_accuracy"] - rec["test_accuracy"]) <= 0.05, name
        assert (out / b[name]["file"]).exists()
    assert b["rf_seed01"]["content_sha256"] == a["rf_seed01"]["content_sha256"]
    made = [n for t in run.timings for n in t["members"]]
    assert sorted(made) == sorted(a) and len({t["pid"] for t in run.timings}) == 2
    # the target first; what is made from it only after it was recorded
    target_done = next(t["received"] for t in run.timings if t["members"] == ["target"])
    for t in run.timings:
        if t["members"][0] not in ("target", "rf_seed01", "cae_reference_seed01"):
            assert t["submitted"] >= target_done, t["members"]
    assert json.loads((out / "manifest.json").read_text()) == on_ray


def test_rerun_skips_present_members_and_makes_missing_ones(ray_zoo, ds, tmp_path):
    src, on_ray, _ = ray_zoo
    out = tmp_path / "zoo"
    shutil.copytree(src, out)
    again = RayBuild(ZooBuilder("fashion_mnist", out, SMALL, dataset=ds, verbose=0))
    m = again.run()
    assert again.timings == [] and _records(m) == _records(on_ray)  # nothing made again
    # an interrupted build's state: a record lost (its file kept: adopted), a file lost (its record kept: made
    # again), a pruning level and its file lost (made again)
    manifest = read_manifest(out)
    manifest["models"] = [r for r in manifest["models"] if r["name"] not in ("cae_reference_seed01", "wp_p0.1")]
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "rtal.keras").unlink()
    (out / "wp_p0.1.keras").unlink()
    again = RayBuild(ZooBuilder("fashion_mnist", out, SMALL, dataset=ds, verbose=0))
    m = again.run()
    assert sorted(n for t in again.timings for n in t["members"]) == ["cae_reference_seed01", "rtal", "wp_p0.1"]
    recs = _records(m)
    assert [r["name"] for r in m["models"]] == [r["name"] for r in on_ray["models"]] and m["complete"]
    adopted = recs["cae_reference_seed01"]
    assert adopted["content_sha256"] == _records(on_ray)["cae_reference_seed01"]["content_sha256"]
    assert (out / "rtal.keras").exists() and (out / "wp_p0.1.keras").exists()


def test_rejected_pruning_level_stops_its_chain(ray_zoo, ds, tmp_path):
    """A pruning level whose accuracy loss exceeds 3 % is recorded as rejected and the later levels of its chain
    are not made, as in a serial build (the target's recorded accuracy raised to make every level lose)."""
    src, _, _ = ray_zoo
    out = tmp_path / "zoo"
    shutil.copytree(src, out)
    manifest = read_manifest(out)
    manifest["models"] = [r for r in manifest["models"] if r["family"] not in ("WP", "FP")]
    next(r for r in manifest["models"] if r["name"] == "target")["test_accuracy"] = 2.0
    (out / "manifest.json").write_text(json.dumps(manifest))
    longer = replace(SMALL, max_wp=0.2, max_fp_sixteenths=2)
    run = RayBuild(ZooBuilder("fashion_mnist", out, longer, dataset=ds, verbose=0))
    m = run.run()
    assert sorted(n for t in run.timings for n in t["members"]) == ["fp_c01of16", "wp_p0.1"]
    assert [r["name"] for r in m["rejected"]] == ["wp_p0.1", "fp_c01of16"] and m["complete"]
    assert not any(r["family"] in ("WP", "FP") for r in m["models"])
    assert not run.builder.pending()  # the next build makes nothing either


def test_tasks_follow_the_plan_and_what_each_member_needs(tmp_path):
    """No Ray needed: the plan cut into tasks. IPGuard zoo: one member a task, what is made from the target needs
    it, pruning levels in chains. SAC zoo: the fine-pruning snapshots of the run are one task, Extract-Adv needs
    its Extract-L student, every member the source (its record holds the agreement with it)."""
    from ipguard_tf.zoo.sac import SACProfile, SACZooBuilder

    b = ZooBuilder("fashion_mnist", tmp_path / "ipguard", SMALL)
    b.manifest = {"models": [], "rejected": []}
    tasks = tasks_of(b.pending())
    assert [t.names for t in tasks] == [[m.name] for m in b.planned()]
    needs = {t.names[0]: t.needs for t in tasks}
    assert needs["target"] == needs["rf_seed01"] == needs["cae_reference_seed01"] == set()
    assert needs["ftll"] == needs["tflite_int8"] == needs["cae_surrogate_seed01"] == needs["wp_p0.1"] == {"target"}
    assert {t.names[0]: t.chain for t in tasks if t.chain} == {"wp_p0.1": "WP", "fp_c01of16": "FP"}

    prof = SACProfile(
        "t", students=("lenet5",), source="fmnist_cnn", prune_snapshots=4, prune_max=0.5, cae_members=1, irrelevant=1
    )
    s = SACZooBuilder("fashion_mnist", tmp_path / "sac", prof)
    s.manifest = {"models": [], "rejected": []}
    tasks = tasks_of(s.pending())
    prune = [t for t in tasks if t.names[0].startswith("prune_")]
    assert len(prune) == 1 and prune[0].names == ["prune_01of4", "prune_02of4"]
    adv = next(t for t in tasks if t.names[0].startswith("extract_adv"))
    assert adv.needs == {"target", "extract_l_lenet5_s1"}
    assert all(t.needs >= {"target"} for t in tasks if t.names != ["target"])
    assert sum(len(t.names) for t in tasks) == len(s.planned())


@pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST IDX files not installed")
def test_sac_zoo_on_ray(local_ray, tmp_path):
    """A small SAC zoo on Ray, its data loaded by the workers as on the command line: every planned member recorded
    in plan order, the fine-pruning snapshots made by one task, Extract-Adv after its student, every record with
    its agreement with the source (computed in the worker)."""
    from ipguard_tf.zoo.sac import SACProfile, SACZooBuilder, plan

    prof = SACProfile(
        "ray",
        students=("lenet5",),
        source="fmnist_cnn",
        source_epochs=2,
        extract_epochs=1,
        adv_epochs=1,
        finetune_epochs=1,
        transfer_epochs=1,
        adv_finetune_epochs=1,
        irrelevant_epochs=1,
        prune_snapshots=4,
        prune_max=0.5,
        pgd_steps=2,
        adv_examples=128,
        subset=512,
        cae_members=1,
        cae_architectures=("lenet5",),
        irrelevant=1,
        irrelevant_transfer=1,
        max_accuracy_drop=1.0,  # students of 1 epoch on 512 examples: the floor is tested in test_sac_zoo.py
    )
    run = RayBuild(SACZooBuilder("fashion_mnist", tmp_path / "sac", prof, verbose=0))
    m = run.run()
    assert [r["name"] for r in m["models"]] == [n for n, _, _ in plan(prof)] and m["complete"]
    assert ["prune_01of4", "prune_02of4"] in [t["members"] for t in run.timings]
    by_task = {n: t for t in run.timings for n in t["members"]}
    assert by_task["extract_adv_lenet5_s1"]["submitted"] >= by_task["extract_l_lenet5_s1"]["received"]
    for r in m["models"]:
        assert r["agreement"] is None if r.get("labels") else 0.0 <= r["agreement"] <= 1.0


def test_interrupted_build_keeps_finished_members(ds, local_ray, tmp_path):
    """A build stopped (Ctrl-C) after its second member, while another runs: that one is cancelled, what finished
    is recorded, and the restart makes only the rest."""
    out = tmp_path / "zoo"
    recorded = []

    def stop_after_two(rec, timing):
        recorded.append(rec["name"])
        if len(recorded) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_on_ray(ZooBuilder("fashion_mnist", out, MICRO, dataset=ds, verbose=0), on_member=stop_after_two)
    assert recorded[0] == "target" and [r["name"] for r in read_manifest(out)["models"]] == recorded
    again = RayBuild(ZooBuilder("fashion_mnist", out, MICRO, dataset=ds, verbose=0))
    m = again.run()
    remade = [n for t in again.timings for n in t["members"]]
    assert not set(remade) & set(recorded) and len(remade) == 5 and m["complete"] and len(m["models"]) == 7
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*.keras"))  # no half-written file left


def _boom(builder, rec):
    raise ValueError("no FTAL today\n(a second line)")


class BrokenBuilder(ZooBuilder):
    """A builder whose FTAL maker raises (shipped to the workers by value: see the test)."""

    makers = {**MAKERS, "FTAL": _boom}


def test_member_exception_is_one_line_and_the_rest_resumes(ds, local_ray, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    out = tmp_path / "zoo"
    try:
        with pytest.raises(ZooError) as err:
            build_on_ray(BrokenBuilder("fashion_mnist", out, MICRO, dataset=ds, verbose=0))
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    message = str(err.value)
    assert "\n" not in message and "member ftal failed: ValueError: no FTAL today (a second line)" in message
    done = [r["name"] for r in read_manifest(out)["models"]]
    assert "target" in done and "ftal" not in done and not read_manifest(out).get("complete")
    again = RayBuild(ZooBuilder("fashion_mnist", out, MICRO, dataset=ds, verbose=0))
    m = again.run()
    remade = [n for t in again.timings for n in t["members"]]
    assert "ftal" in remade and not set(remade) & set(done) and m["complete"] and len(m["models"]) == 7


def test_cli_ray_flags_and_a_worker_error(local_ray, tmp_path, capsys):
    from ipguard_tf.cli import main

    def one_line_error(argv, expect):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expect in err, err

    out = str(tmp_path / "zoo")
    one_line_error(["-q", "zoo", "build", "--out", out, "--ray-cpus", "2"], "--ray-cpus needs --ray")
    one_line_error(["-q", "zoo", "build", "--out", out, "--ray", "auto", "--ray-cpus", "2"], "for a local Ray")
    one_line_error(["-q", "zoo", "build", "--out", out, "--ray", "--ray-cpus-per-member", "4"], "the Ray cluster has 2")
    # the data the workers look for is absent: the first member's error comes back from its worker as one line
    one_line_error(
        ["-q", "zoo", "build", "--out", out, "--ray", "--data-dir", str(tmp_path)],
        "failed: DataError: --data-dir folder",
    )


def test_package_and_cli_without_ray(tmp_path):
    """Without Ray the package imports and builds serially; --ray says how to install it, in one line."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["ray"] = None  # import ray fails
        import ipguard_tf.zoo.parallel
        from ipguard_tf.cli import main
        sys.exit(main(["-q", "zoo", "build", "--out", {str(tmp_path / "zoo")!r}, "--ray"]))
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "pip install 'ray>=2.40,<3'" in lines[-1], r.stderr[-2000:]


def test_a_sweep_on_ray_caches_what_a_serial_sweep_computes(serial_zoo, ds, local_ray, tmp_path):
    """Sweeps on Ray (``experiments/reproduce.py --ray``): one task per point, each writing its fingerprint and
    rates into the sweep's cache; the serial sweep afterwards finds them cached and reports them. Random points
    and a one-step FGSM are bit-identical to a serial sweep's; IPGuard's 40-step Adam search runs TensorFlow on
    the worker's one thread (a serial sweep on all cores), so its points may differ by rounding: the same points
    are made (count, labels' agreement with the target) and each rate is within 0.2 of the serial sweep's. A
    second run does nothing; a failing point is one line naming it."""
    from ipguard_tf.evaluation.parallel import run_on_ray
    from ipguard_tf.evaluation.sweep import Sweep, load_zoo_suspects, run_key
    from ipguard_tf.zoo.members import load_member

    out, _ = serial_zoo
    suspects = load_zoo_suspects(out)
    target = load_member(out, "target")
    points = [("random", "RR", None, 0), ("fgsm", "TR", 0.1, 0), ("ipguard", "TL", 1.0, 0)]
    params = {"ipguard": {"max_iter": 40}}

    def sweep(name):
        return Sweep(
            tmp_path / name, target, ds.x_train, suspects, n=8, method_params=params, progress=False, train_y=ds.y_train
        )

    serial, on_ray = sweep("serial"), sweep("ray")
    got = run_on_ray(on_ray, out, points)
    assert set(got) == {run_key(*p) for p in points}
    assert all(on_ray.is_cached(*p) for p in points)
    for p in points:
        a, b = serial.run(*p), on_ray.run(*p)
        assert b["rates"] == got[b["key"]]["rates"] and set(a["rates"]) == set(b["rates"])
        if p[0] != "ipguard":
            assert a["rates"] == b["rates"] and a["n_converged"] == b["n_converged"], p
        else:
            assert a["n"] == b["n"] == 8
            assert all(abs(a["rates"][k] - b["rates"][k]) <= 0.2 for k in a["rates"]), (a["rates"], b["rates"])
    assert run_on_ray(on_ray, out, points) == {}
    with pytest.raises(ZooError, match=r"sweep point fgsm_TR_-1_seed0 failed: .*epsilon"):
        run_on_ray(on_ray, out, [("fgsm", "TR", -1.0, 0)])


def test_owner_negatives_train_on_ray(ds, local_ray, tmp_path):
    """``ipguard fingerprint --negatives N --ray``: one Ray task per missing negative, each writing its file; the
    same names, recipe and seeds as a serial run, accuracies within 0.1 of it (one thread in the worker against
    all here: rounding grows through training); a second run reuses them; a model given in memory is refused."""
    from conftest import make_tiny_keras3

    from ipguard_tf.core.errors import ParameterError
    from ipguard_tf.io.data import Dataset
    from ipguard_tf.zoo.negatives import train_negatives
    from ipguard_tf.zoo.parallel import RayOptions

    model = make_tiny_keras3(0)
    model.save(tmp_path / "t.keras")
    rng = np.random.default_rng(0)
    x = rng.random((96, 8, 8, 1), dtype=np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64) + 2 * (x[:, 0, 0, 0] > 0.5)
    data = Dataset("mine", x[:64], y[:64], x[64:], y[64:], 4)
    said = []
    serial = train_negatives(model, data, 2, tmp_path / "serial", epochs=2, progress=said.append)
    on_ray = train_negatives(
        model, data, 2, tmp_path / "ray", epochs=2, progress=said.append, ray=RayOptions(),
        model_file=str(tmp_path / "t.keras"),
    )  # fmt: skip
    assert [n for n, _, _ in on_ray] == [n for n, _, _ in serial] == ["negative-1.keras", "negative-2.keras"]
    assert all(abs(a - b) <= 0.1 for (_, _, a), (_, _, b) in zip(serial, on_ray))
    assert (tmp_path / "ray" / "recipe.json").read_text() == (tmp_path / "serial" / "recipe.json").read_text()
    assert sum("trained on Ray" in s for s in said) == 2
    said.clear()
    train_negatives(model, data, 2, tmp_path / "ray", epochs=2, progress=said.append, ray=RayOptions())
    assert sum("reused" in s for s in said) == 2
    with pytest.raises(ParameterError, match="needs the model as a file"):
        train_negatives(model, data, 3, tmp_path / "ray", epochs=2, ray=RayOptions())
