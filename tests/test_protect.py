"""Anti-piracy transform (Chen & Wu 2018; ipguard_tf.protect): transforms, training, key files, threats, CLI."""

import json

import numpy as np
import pytest

from ipguard_tf.core.errors import ParameterError

SHAPE = (8, 8, 1)
CLASSES = 4


def _toy_data(n, seed):
    """4 classes of 8x8 images: class c has its quadrant c brighter, plus noise (learnable in a few epochs)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.random((n,) + SHAPE, dtype=np.float32) * 0.5
    for c in range(CLASSES):
        r, q = divmod(c, 2)
        x[y == c, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 0.4
    return np.clip(x, 0, 1).astype(np.float32), y


def _toy_model(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(SHAPE)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    return keras.Model(inp, keras.layers.Dense(CLASSES)(h), name="toy")


@pytest.mark.parametrize("kind", ["fixed", "learned", "generator"])
def test_transform_is_keyed_deterministic_and_in_range(kind):
    from ipguard_tf.protect.transforms import make_transform

    x, _ = _toy_data(32, 0)
    a = make_transform(kind, SHAPE, 7)(x)
    b = make_transform(kind, SHAPE, 7)(x)
    c = make_transform(kind, SHAPE, 8)(x)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.dtype == np.float32
    assert not np.array_equal(a, x)
    # extreme inputs stay in range too
    ones = make_transform(kind, SHAPE, 7)(np.ones((2,) + SHAPE, np.float32))
    assert ones.max() <= 1.0 and ones.min() >= 0.0


def test_bipolar_values_and_frequencies():
    from ipguard_tf.protect.transforms import bipolar

    d = bipolar((64, 64, 3), 0.2, 0.15, 3)
    vals, counts = np.unique(d, return_counts=True)
    assert np.allclose(vals, [-0.2, 0.0, 0.2])
    freq = counts / d.size
    assert abs(freq[0] - 0.15) < 0.02 and abs(freq[2] - 0.15) < 0.02


@pytest.mark.parametrize("bad", [dict(sigma=0.0), dict(p=0.6), dict(p=0.0)])
def test_bad_transform_parameters_raise(bad):
    from ipguard_tf.protect.transforms import FixedTransform

    with pytest.raises(ParameterError):
        FixedTransform(SHAPE, 1, **bad)


def test_bad_keys_kinds_and_settings_raise():
    from ipguard_tf.protect.training import ProtectSettings
    from ipguard_tf.protect.transforms import make_transform

    for key in (-1, 2**63, 1.5, True, "3"):
        with pytest.raises(ParameterError):
            make_transform("fixed", SHAPE, key)
    with pytest.raises(ParameterError):
        make_transform("rot13", SHAPE, 1)
    with pytest.raises(ParameterError):
        make_transform("generator", SHAPE, 1, filters=0)
    for bad in (
        dict(alpha=0),
        dict(beta=-1),
        dict(gamma=float("nan")),
        dict(epochs=0),
        dict(batch_size=1.5),
        dict(learning_rate=2.0),
    ):
        with pytest.raises(ParameterError):
            ProtectSettings(**bad)


def test_trained_toy_model_is_accurate_on_transformed_and_wrong_on_raw():
    from ipguard_tf.protect.training import ProtectSettings, evaluate_protection, train_protected
    from ipguard_tf.protect.transforms import FixedTransform

    x, y = _toy_data(2000, 1)
    xt, yt = _toy_data(500, 2)
    model = _toy_model(0)
    t = FixedTransform(SHAPE, 11, sigma=0.2, p=0.2)
    hist = train_protected(
        model, t, x, y, ProtectSettings(epochs=15, batch_size=64, learning_rate=3e-3), seed=0, progress=False
    )
    m = evaluate_protection(model, t, xt, yt)
    assert len(hist["history"]) == 15
    assert m["authorized"] >= 0.9, m
    assert m["unauthorized"] <= 1.0 / CLASSES + 0.05, m  # chance or below: E_r pushes the true class down
    assert 10 < m["psnr"] < 40


def test_learned_and_generator_variables_are_trained():
    from ipguard_tf.protect.training import ProtectSettings, train_protected
    from ipguard_tf.protect.transforms import GeneratorTransform, LearnedTransform

    x, y = _toy_data(256, 3)
    for t in (LearnedTransform(SHAPE, 5), GeneratorTransform(SHAPE, 5)):
        before = {k: v.copy() for k, v in t.arrays().items()}
        train_protected(_toy_model(1), t, x, y, ProtectSettings(epochs=1, batch_size=64), seed=0, progress=False)
        assert any(not np.array_equal(before[k], v) for k, v in t.arrays().items()), t.kind


def test_baseline_training_and_resume_equals_uninterrupted(tmp_path):
    from ipguard_tf.protect.training import ProtectSettings, train_protected
    from ipguard_tf.protect.transforms import LearnedTransform

    x, y = _toy_data(256, 4)
    s2 = ProtectSettings(epochs=2, batch_size=64)
    full_m, full_t = _toy_model(2), LearnedTransform(SHAPE, 9)
    train_protected(full_m, full_t, x, y, s2, seed=0, progress=False)
    ck = tmp_path / "ck.npz"
    m1, t1 = _toy_model(2), LearnedTransform(SHAPE, 9)
    train_protected(m1, t1, x, y, ProtectSettings(epochs=1, batch_size=64), seed=0, checkpoint=ck, progress=False)
    m2, t2 = _toy_model(3), LearnedTransform(SHAPE, 9)  # other initial weights: all must come from the checkpoint
    hist = train_protected(m2, t2, x, y, s2, seed=0, checkpoint=ck, progress=False)
    assert [h["epoch"] for h in hist["history"]] == [1, 2]
    for a, b in zip(full_m.get_weights(), m2.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full_t.arrays()["delta"], t2.arrays()["delta"], rtol=1e-5, atol=1e-6)
    # a checkpoint of another transform is refused, not silently mixed in
    with pytest.raises(ParameterError, match="another"):
        train_protected(_toy_model(2), LearnedTransform(SHAPE, 10), x, y, s2, seed=0, checkpoint=ck, progress=False)
    ck.write_bytes(b"garbage")  # a damaged checkpoint: a one-line ParameterError, never a traceback
    with pytest.raises(ParameterError, match="unreadable.*delete it"):
        train_protected(_toy_model(2), LearnedTransform(SHAPE, 9), x, y, s2, seed=0, checkpoint=ck, progress=False)
    # the baseline: no transform, cross-entropy only
    hb = train_protected(_toy_model(2), None, x, y, ProtectSettings(epochs=1, batch_size=64), seed=0, progress=False)
    assert hb["history"][0]["e_r"] == 0.0 and hb["history"][0]["distortion"] == 0.0


@pytest.mark.parametrize("kind", ["fixed", "learned", "generator"])
def test_key_file_round_trip(tmp_path, kind):
    from ipguard_tf.protect.keyfile import load_key, save_key
    from ipguard_tf.protect.transforms import make_transform

    t = make_transform(kind, SHAPE, 12345)
    if kind != "fixed":  # a trained transform's values, not its start, must come back
        for v in t.trainable_variables:
            v.assign(v + 0.01)
    save_key(t, tmp_path / "key.npz", model_sha256="ab" * 32, extra={"note": "x"})
    t2, meta = load_key(tmp_path / "key.npz")
    assert type(t2) is type(t) and t2.params() == t.params()
    for k, a in t.arrays().items():
        assert np.array_equal(a, t2.arrays()[k])
    x, _ = _toy_data(8, 5)
    assert np.array_equal(t(x), t2(x))
    assert meta["model_sha256"] == "ab" * 32 and meta["note"] == "x"


def test_key_file_rejects_tampering_wrong_files_and_wrong_model(tmp_path):
    import io
    import zipfile

    from ipguard_tf.core.fingerprint import Fingerprint
    from ipguard_tf.io.fingerprint_file import save_fingerprint
    from ipguard_tf.models.classifier import content_sha256
    from ipguard_tf.protect.keyfile import KeyFileError, check_model, load_key, save_key
    from ipguard_tf.protect.transforms import LearnedTransform

    t = LearnedTransform(SHAPE, 77)
    p = tmp_path / "key.npz"
    model = _toy_model(0)
    save_key(t, p, model_sha256=content_sha256(model))
    # change one value of the perturbation inside the archive
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["delta"] = arrays["delta"].copy()
    arrays["delta"][0, 0, 0] += 0.5
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    bad = tmp_path / "tampered.npz"
    bad.write_bytes(buf.getvalue())
    with pytest.raises(KeyFileError, match="SHA-256"):
        load_key(bad)
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(p.read_bytes()[:100])
    with pytest.raises(KeyFileError, match="truncated"):
        load_key(trunc)
    with pytest.raises(KeyFileError, match="does not exist"):
        load_key(tmp_path / "absent.npz")
    fp = Fingerprint(
        x=np.zeros((1,) + SHAPE),
        y=[0],
        source=[0],
        target=[1],
        iterations=[1],
        objective=[0.0],
        converged=[True],
        distortion=[0.0],
        metadata={"num_classes": 4},
    )
    save_fingerprint(fp, tmp_path / "fp.npz")
    with pytest.raises(KeyFileError, match="schema"):
        load_key(tmp_path / "fp.npz")
    _, meta = load_key(p)
    check_model(meta, model, p)  # its own model: accepted
    with pytest.raises(KeyFileError, match="belongs to"):
        check_model(meta, _toy_model(1), p)
    assert zipfile.is_zipfile(p)


def test_threat_functions_run():
    from ipguard_tf.protect.threats import direct_piracy, input_only_attack, pair_attack
    from ipguard_tf.protect.transforms import FixedTransform

    x, y = _toy_data(200, 6)
    model = _toy_model(0)
    t = FixedTransform(SHAPE, 1)
    acc = direct_piracy(model, x, y)
    assert 0.0 <= acc <= 1.0
    r = input_only_attack(model, x, y, sigma=0.1, p=0.1, trials=3, seed=0, progress=False)
    assert r["trials"] == 3 and len(r["accuracies"]) == 3 and r["best"] >= r["mean"] >= min(r["accuracies"])
    r2 = input_only_attack(model, x, y, sigma=0.1, p=0.1, trials=3, seed=0, progress=False)
    assert r2 == r  # seeded
    pa = pair_attack(model, t, x, x[:50], y[:50], fraction=0.5, trials=2, seed=0, epochs=1, progress=False)
    assert (
        pa["pairs"] == 100 and pa["trials"] == 2 and pa["module"] == "universal" and 0 <= pa["mean"] <= pa["best"] <= 1
    )
    with pytest.raises(ParameterError):
        pair_attack(model, t, x, x, y, fraction=0.0, progress=False)
    with pytest.raises(ParameterError):
        input_only_attack(model, x, y, sigma=0.1, p=0.1, trials=0, progress=False)


def test_pair_module_learns_a_universal_perturbation():
    """With pairs, a universal perturbation is easy to recover: the attacker's universal module's outputs come
    far closer to the owner's processed inputs than the raw inputs are (a convolutional generator could not:
    it has no notion of position)."""
    from ipguard_tf.protect.threats import train_pair_module
    from ipguard_tf.protect.transforms import FixedTransform

    x, _ = _toy_data(512, 7)
    t = FixedTransform(SHAPE, 2, sigma=0.2, p=0.2)
    xp = t(x)
    g = train_pair_module(x, xp, key=0, family="universal", epochs=20)
    assert np.mean((g(x) - xp) ** 2) < 0.5 * np.mean((x - xp) ** 2)


def test_cli_protect_train_evaluate_attack(tmp_path, capsys):
    from ipguard_tf.cli import main

    out = tmp_path / "run"
    common = ["--train-size", "512", "--test-size", "256"]
    assert (
        main(
            ["-q", "protect", "train", "--transform", "fixed", "--epochs", "1", "--out", str(out), "--key", "5"]
            + common
        )
        == 0
    )
    assert (out / "model.keras").exists() and (out / "key.npz").exists() and not (out / "checkpoint.npz").exists()
    rec = json.loads((out / "train.json").read_text())
    assert rec["transform"] == "fixed" and rec["transform_params"]["key"] == "5"
    capsys.readouterr()
    assert (
        main(
            ["-q", "protect", "evaluate", "--model", str(out / "model.keras"), "--key", str(out / "key.npz"), "--json"]
            + common
        )
        == 0
    )
    m = json.loads(capsys.readouterr().out)
    assert m == pytest.approx(rec["metrics"])  # same test images, same model and key
    assert (
        main(
            [
                "-q",
                "protect",
                "attack",
                "--model",
                str(out / "model.keras"),
                "--key",
                str(out / "key.npz"),
                "--threat",
                "input-only",
                "--trials",
                "2",
                "--json",
            ]
            + common
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert r["trials"] == 2 and r["sigma"] == 0.1
    assert (
        main(
            [
                "-q",
                "protect",
                "attack",
                "--model",
                str(out / "model.keras"),
                "--key",
                str(out / "key.npz"),
                "--threat",
                "pair",
                "--fractions",
                "0.1",
                "--trials",
                "1",
                "--pair-epochs",
                "1",
            ]
            + common
        )
        == 0
    )
    assert "pair attack with 10% of the pairs" in capsys.readouterr().out
    # a tampered key: one line, exit 2, no traceback
    key = bytearray((out / "key.npz").read_bytes())
    key[len(key) // 2] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(key))
    assert (
        main(["protect", "evaluate", "--model", str(out / "model.keras"), "--key", str(tmp_path / "bad.npz")] + common)
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ipguard: error:")
    # a finished folder is not silently reused for another transform
    assert main(["protect", "train", "--transform", "learned", "--epochs", "1", "--out", str(out)] + common) == 2
    assert "already holds a trained simple_cnn fixed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: one line, status 2
        main(["protect", "train", "--transform", "fixed", "--out", str(out), "--gamma", "-1"])
    assert exc.value.code == 2


def test_experiment_script_composes_and_resumes(tmp_path):
    """experiments/antipiracy.py on its tiny CI config: the table, the attacks, the report and run.json; a rerun
    reuses every finished model and cached attack."""
    import csv
    from pathlib import Path

    from experiments import antipiracy as exp

    root = Path(__file__).resolve().parents[1]
    cfg = str(root / "experiments" / "configs" / "antipiracy_ci.json")
    assert exp.main(["--config", cfg, "--out", str(tmp_path), "--quiet"]) == 0
    with open(tmp_path / "table.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["transform"] for r in rows] == ["none", "fixed", "learned", "generator"]
    assert all(r["published_authorized"] for r in rows)
    with open(tmp_path / "attacks.csv") as fh:
        attacks = list(csv.DictReader(fh))
    assert {r["threat"] for r in attacks} == {"direct piracy", "input-only", "pair 50%"}
    assert (tmp_path / "run.json").exists() and "## Attacks" in (tmp_path / "README.md").read_text()
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.json") if "cache" in p.parts or p.name == "train.json"}
    assert exp.main(["--config", cfg, "--out", str(tmp_path), "--quiet"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())
    # the second run's record keeps the first's; every attack is cached, so any run reports it
    run = json.loads((tmp_path / "run.json").read_text())
    assert len(run["previous_runs"]) == 1 and "previous_runs" not in run["previous_runs"][0]
    recs = {
        (a, t): json.loads((tmp_path / "models" / f"{a}_{t}" / "train.json").read_text())
        for a in ["simple_cnn"]
        for t in exp.TRANSFORMS
    }
    assert exp.attacks_cached(json.loads(Path(cfg).read_text()), tmp_path, "simple_cnn", recs)


def test_cli_trains_the_baseline(tmp_path, capsys):
    from ipguard_tf.cli import main

    assert (
        main(
            [
                "-q",
                "protect",
                "train",
                "--transform",
                "none",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "b"),
                "--train-size",
                "256",
                "--test-size",
                "128",
            ]
        )
        == 0
    )
    assert "baseline, no transform" in capsys.readouterr().out
    assert not (tmp_path / "b" / "key.npz").exists()
    assert json.loads((tmp_path / "b" / "train.json").read_text())["metrics"]["psnr"] is None
