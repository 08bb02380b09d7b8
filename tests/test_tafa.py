"""TAFA reconstruction (ipguard_tf.methods.tafa): the ReLU probe and the boundary points."""

import numpy as np
import pytest

from ipguard_tf.core.errors import ModelError, ParameterError


def _mlp(seed=0, out=3, out_act=None):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    h = keras.layers.Dense(8)(h)
    h = keras.layers.ReLU()(h)
    return keras.Model(inp, keras.layers.Dense(out, activation=out_act)(h), name=f"mlp{seed}")


def test_probe_reads_every_relu_and_keeps_the_output():
    from ipguard_tf.methods.tafa.probe import ReluProbe
    from ipguard_tf.zoo.architectures import build_architecture

    m = _mlp()
    p = ReluProbe(m)
    assert p.sizes == [16, 8] and p.total == 24
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    pre, out = p(x)
    np.testing.assert_allclose(out.numpy(), m(x).numpy(), rtol=1e-6, atol=1e-6)
    # the fused layer's pre-activation, checked by hand
    w, b = m.layers[1].get_weights()
    np.testing.assert_allclose(pre.numpy()[:, :16], x @ w + b, rtol=1e-5, atol=1e-5)
    cnn = build_architecture("fmnist_cnn", (28, 28, 1), 10)
    pc = ReluProbe(cnn)
    assert pc.sizes == [28 * 28 * 32, 14 * 14 * 64, 64]
    xc = np.random.default_rng(1).random((2, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(pc(xc)[1].numpy(), cnn(xc).numpy(), rtol=1e-5, atol=1e-5)


def test_probe_refuses_what_is_not_a_relu_network():
    import keras

    from ipguard_tf.methods.tafa.probe import ReluProbe

    inp = keras.Input((4,))
    h = keras.layers.Dense(8, activation="tanh")(inp)
    h = keras.layers.Dense(8, activation="relu")(h)
    with pytest.raises(ModelError, match="not a ReLU network"):  # tanh, then a ReLU
        ReluProbe(keras.Model(inp, keras.layers.Dense(2)(h)))
    inp = keras.Input((4,))
    with pytest.raises(ModelError, match="no ReLU"):
        ReluProbe(keras.Model(inp, keras.layers.Dense(2)(inp)))
    with pytest.raises(ModelError):
        ReluProbe(object())


@pytest.mark.parametrize("domain", [None, (0.0, 1.0)])
def test_boundary_points_are_on_the_neuron_hyperplane_with_the_recorded_pattern(domain):
    from ipguard_tf.methods.tafa.boundary import TOLERANCE, check_points, find_boundary_points
    from ipguard_tf.methods.tafa.probe import ReluProbe

    p = ReluProbe(_mlp(1, out_act="tanh"))
    rng = np.random.default_rng(2)
    starts = (rng.random((40, 6)) if domain else rng.standard_normal((40, 6))).astype(np.float32)
    pts = find_boundary_points(p, starts, seed=0, reach=3.0, domain=domain, progress=False)
    assert len(pts.x) + sum(pts.rejected.values()) == 40
    assert len(pts.x) >= 30
    if domain:
        assert pts.x.min() >= 0.0 and pts.x.max() <= 1.0
    pre, _ = p(pts.x)
    zj = pre.numpy()[np.arange(len(pts.x)), pts.neuron]
    # pre-activation within tolerance of 0 (in input units: |z| / ||grad z||) and the recorded pattern elsewhere
    assert check_points(p, pts).all()
    assert np.all(np.abs(zj) <= TOLERANCE * 1e3)  # and small in absolute terms too (the MLP's gradients are O(1))
    assert np.allclose(np.linalg.norm(pts.normal, axis=1), 1.0, atol=1e-4)
    assert set(pts.layer) <= {0, 1} and np.all(pts.layer == p.layer_of(pts.neuron))
    # the points are where the chosen neuron switches: just across the hyperplane it is on, just before it off
    # (or the reverse), along the normal
    eps = 1e-3
    za = p(pts.x + eps * pts.normal)[0].numpy()[np.arange(len(pts.x)), pts.neuron]
    zb = p(pts.x - eps * pts.normal)[0].numpy()[np.arange(len(pts.x)), pts.neuron]
    assert np.all(za > 0) and np.all(zb < 0)


def test_a_tampered_point_fails_the_recheck():
    from ipguard_tf.methods.tafa.boundary import check_points, find_boundary_points
    from ipguard_tf.methods.tafa.probe import ReluProbe

    p = ReluProbe(_mlp(2))
    starts = np.random.default_rng(3).standard_normal((10, 6)).astype(np.float32)
    pts = find_boundary_points(p, starts, seed=1, reach=3.0, domain=None, progress=False)
    pts.x = pts.x + 0.05 * pts.normal
    assert not check_points(p, pts).any()


def test_boundary_points_on_the_fashion_mnist_cnn():
    """The CNN has 37,632 ReLUs: the line search still finds points on single faces of its regions."""
    from ipguard_tf.methods.tafa.boundary import check_points, find_boundary_points
    from ipguard_tf.methods.tafa.probe import ReluProbe
    from ipguard_tf.zoo.architectures import build_architecture

    p = ReluProbe(build_architecture("fmnist_cnn", (28, 28, 1), 10))
    starts = np.random.default_rng(4).random((8, 28, 28, 1), dtype=np.float32)
    pts = find_boundary_points(p, starts, seed=2, reach=1.0, progress=False)
    assert len(pts.x) >= 6 and check_points(p, pts).all()


def _trained_regressor(seed, x, y, epochs=30, init=None):
    import keras

    m = _mlp(seed, out=3)
    if init is not None:
        m.set_weights(init.get_weights())
    m.compile(optimizer=keras.optimizers.Adam(1e-2 if init is None else 1e-3), loss="mse")
    m.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return m


def test_bend_rate_direction_on_a_toy_positive_and_negative():
    """A regressor (any output shape works): the target's bend rate is 1 on its kept points, a fine-tuned copy's
    stays high, an independently trained model's is clearly lower."""
    from ipguard_tf.core.tafa_statistics import bend_rate, second_difference
    from ipguard_tf.methods.tafa.boundary import find_boundary_points
    from ipguard_tf.methods.tafa.probe import ReluProbe
    from ipguard_tf.models.outputs import keras_outputs

    rng = np.random.default_rng(5)
    x = rng.standard_normal((1024, 6)).astype(np.float32)
    y = np.stack([np.sin(x[:, 0]) + x[:, 1], np.abs(x[:, 2] - x[:, 3]), x[:, 4] * x[:, 5]], 1).astype(np.float32)
    target = _trained_regressor(0, x, y)
    pts = find_boundary_points(
        ReluProbe(target),
        rng.standard_normal((200, 6)).astype(np.float32),
        seed=3,
        reach=3.0,
        domain=None,
        progress=False,
    )
    f_t = keras_outputs(target)
    keep = second_difference(f_t, pts.x, pts.normal) > second_difference(f_t, pts.control, pts.normal)
    assert keep.mean() > 0.5
    xs, cs, ns = pts.x[keep], pts.control[keep], pts.normal[keep]
    assert bend_rate(f_t, xs, cs, ns) == 1.0
    positive = _trained_regressor(0, x, y, epochs=2, init=target)  # fine-tuned copy
    negative = _trained_regressor(7, x, y)  # independent: same data and architecture, another seed
    r_pos = bend_rate(keras_outputs(positive), xs, cs, ns)
    r_neg = bend_rate(keras_outputs(negative), xs, cs, ns)
    assert r_pos > r_neg + 0.1, (r_pos, r_neg)  # measured here: 0.72 vs 0.51
    assert r_neg < 0.8
    with pytest.raises(ParameterError):
        bend_rate(f_t, xs, cs[:1], ns)
    # output agreement: the target agrees with its own outputs everywhere, the independent model less
    from ipguard_tf.core.tafa_statistics import output_agreement, scaled_bend_rate

    outs = f_t(xs)
    assert output_agreement(f_t, xs, outs) == 1.0
    assert output_agreement(keras_outputs(negative), xs, outs) < output_agreement(keras_outputs(positive), xs, outs)
    assert 0.0 <= scaled_bend_rate(keras_outputs(negative), xs, cs, ns) <= 1.0
    # the scale-free statistics: the target scores 1, the fine-tuned copy above the independent model
    from ipguard_tf.core.tafa_statistics import one_sided_slopes, output_correlation, slope_agreement

    slopes = one_sided_slopes(f_t, xs, ns)
    assert slopes.shape == (len(xs), 6)
    assert slope_agreement(f_t, xs, ns, slopes) == pytest.approx(1.0)
    assert output_correlation(f_t, xs, outs) == pytest.approx(1.0)
    for stat in (lambda g: slope_agreement(g, xs, ns, slopes), lambda g: output_correlation(g, xs, outs)):
        p_, n_ = stat(keras_outputs(positive)), stat(keras_outputs(negative))
        assert 0.0 <= n_ < p_ <= 1.0, (p_, n_)
    flat = lambda z: np.zeros((len(z), 3), np.float32)  # noqa: E731 - a constant model: no slope, no variation
    assert slope_agreement(flat, xs, ns, slopes) == 0.0 and output_correlation(flat, xs, outs) == 0.0
    with pytest.raises(ParameterError):
        slope_agreement(f_t, xs, ns, slopes[:, :3])


def test_tafa_method_extracts_saves_and_matches_itself(tmp_path):
    """Through the registry: a generator-like model (latent in, image-shaped out), a stored fingerprint whose
    every point re-checks, the target's bend rate 1.0, the file round trip and its checks."""
    import keras

    from ipguard_tf.core import registry
    from ipguard_tf.io.fingerprint_file import load_fingerprint, save_fingerprint
    from ipguard_tf.methods.tafa.boundary import BoundaryPoints, check_points
    from ipguard_tf.methods.tafa.probe import ReluProbe
    from ipguard_tf.verification.suspects import verify

    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    h = keras.layers.Dense(32, activation="relu")(inp)
    h = keras.layers.Dense(32, activation="relu")(h)
    gen = keras.Model(inp, keras.layers.Reshape((4, 4, 1))(keras.layers.Dense(16, activation="tanh")(h)))
    fp = registry.build("tafa", task="generator", seed=1, reach=3.0).generate(gen, 30)
    assert len(fp) == 30 and fp.metadata["task"] == "generator" and fp.metadata["input_range"] is None
    assert fp.outputs.shape == (30, 16) and (fp.y == -1).all()
    pts = BoundaryPoints(
        x=fp.x,
        control=fp.control,
        neuron=fp.neuron,
        layer=fp.layer,
        preact=fp.objective,
        normal=fp.normal,
        pattern=fp.pattern,
    )
    assert check_points(ReluProbe(gen), pts).all()
    save_fingerprint(fp, tmp_path / "fp.npz")
    back = load_fingerprint(tmp_path / "fp.npz")
    assert np.array_equal(back.normal, fp.normal) and np.array_equal(back.pattern, fp.pattern)
    r = verify(back, gen)
    assert r.statistic == "output_correlation" and r.value == pytest.approx(1.0) and r.verdict == 1
    by_bend = registry.build("tafa", task="generator", seed=1, reach=3.0, statistic="bend_rate").generate(gen, 30)
    assert np.array_equal(by_bend.x, fp.x)  # the statistic changes how points are verified, not which
    r = verify(by_bend, gen)
    assert r.statistic == "bend_rate" and r.value == 1.0 and r.verdict == 1
    with pytest.raises(ParameterError):
        registry.build("tafa", statistic="matching_rate")
    from ipguard_tf.models.remote import RemoteError
    from ipguard_tf.verification.remote import verify_remote

    with pytest.raises(RemoteError, match="raw outputs"):
        verify_remote(back, None)
    assert back.slopes.shape == (30, 32) and np.array_equal(back.slopes, fp.slopes)
    from ipguard_tf.methods.tafa.method import verify_all, with_slopes

    own = verify_all(back, gen)
    assert own["slope_agreement"] == pytest.approx(1.0) and own["output_correlation"] == pytest.approx(1.0)
    import dataclasses

    old = dataclasses.replace(back, slopes=None)  # a file made before the slopes existed
    assert "slope_agreement" not in verify_all(old, gen)
    assert np.allclose(with_slopes(old, gen).slopes, fp.slopes, atol=1e-5)
    keras.utils.set_random_seed(9)
    inp2 = keras.Input((8,))
    h2 = keras.layers.Dense(32, activation="relu")(inp2)
    other = keras.Model(inp2, keras.layers.Dense(16)(keras.layers.Dense(32, activation="relu")(h2)))
    assert verify(by_bend, other).value < 0.8
    inp3 = keras.Input((8,))
    with pytest.raises(ModelError, match="values"):
        verify(back, keras.Model(inp3, keras.layers.Dense(5)(inp3)))


def test_wgan_training_resumes_from_its_checkpoint(tmp_path):
    from ipguard_tf.io.checkpoint import CheckpointError
    from ipguard_tf.zoo import tafa_models as M

    x = np.random.default_rng(0).random((64, 28, 28, 1)).astype(np.float32)
    g, c = M.generator(1), M.critic(1)
    M.train_wgan(g, c, x, seed=1, iterations=3, progress=False)
    ck = tmp_path / "wgan.ckpt.npz"
    g1, c1 = M.generator(1), M.critic(1)
    M.train_wgan(g1, c1, x, seed=1, iterations=2, checkpoint=ck, every=1, progress=False)
    g2, c2 = M.generator(1), M.critic(1)  # fresh models: the weights and optimiser state come from the checkpoint
    M.train_wgan(g2, c2, x, seed=1, iterations=3, checkpoint=ck, progress=False)
    for a, b in zip(g.get_weights() + c.get_weights(), g2.get_weights() + c2.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match="belongs to another WGAN run") as err:
        M.train_wgan(M.generator(1), M.critic(1), x, seed=2, iterations=3, checkpoint=ck, progress=False)
    assert "\n" not in str(err.value)
    ck.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable.*delete it"):
        M.train_wgan(M.generator(1), M.critic(1), x, seed=1, iterations=3, checkpoint=ck, progress=False)


def test_tafa_cli_extract_and_verify_a_regressor(tmp_path, capsys):
    import json

    import keras

    from ipguard_tf.cli import main

    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inp, keras.layers.Dense(5)(keras.layers.Dense(16, activation="relu")(h)))
    model.save(tmp_path / "reg.keras")
    out = tmp_path / "fp.npz"
    assert (
        main(
            [
                "-q",
                "extract",
                "--method",
                "tafa",
                "--task",
                "regressor",
                "--model",
                str(tmp_path / "reg.keras"),
                "--n",
                "20",
                "--out",
                str(out),
                "--no-checkpoint",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["-q", "verify", "--fingerprint", str(out), "--suspect", str(tmp_path / "reg.keras"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["statistic"] == "output_correlation" and rows[0]["value"] == pytest.approx(1.0)
    assert rows[0]["verdict"] == 1 and rows[0]["threshold"] == 0.6
    assert main(["-q", "verify", "--fingerprint", str(out), "--suspect", str(tmp_path / "reg.keras")]) == 0
    assert "output_correlation >= threshold: verdict 1" in capsys.readouterr().out  # higher = copy
    assert (
        main(
            [
                "-q",
                "verify",
                "--fingerprint",
                str(out),
                "--suspect",
                str(tmp_path / "reg.keras"),
                "--report",
                str(tmp_path / "report.html"),
            ]
        )
        == 0
    )
    report = (tmp_path / "report.html").read_text()
    assert "TAFA, reconstructed" in report and "labels many of them" not in report
    assert (
        main(
            [
                "-q",
                "extract",
                "--method",
                "tafa",
                "--task",
                "regressor",
                "--model",
                str(tmp_path / "reg.keras"),
                "--n",
                "20",
                "--out",
                str(tmp_path / "fp2.npz"),
                "--no-checkpoint",
                "--tafa-statistic",
                "bend_rate",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "-q",
                "verify",
                "--fingerprint",
                str(tmp_path / "fp2.npz"),
                "--suspect",
                str(tmp_path / "reg.keras"),
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["statistic"] == "bend_rate" and rows[0]["value"] == 1.0


def test_experiment_script_on_its_tiny_config(tmp_path):
    """experiments/tafa.py composes the library: models built and kept, one fingerprint per task, every suspect's
    bend rate, the summary with AUC/ARUC; a rerun reuses the models and fingerprints."""
    import csv
    from pathlib import Path

    from experiments import tafa as exp

    root = Path(__file__).resolve().parents[1]
    cfg = str(root / "experiments" / "configs" / "tafa_ci.json")
    assert exp.main(["--config", cfg, "--out", str(tmp_path), "--quiet"]) == 0
    with open(tmp_path / "summary.csv") as fh:
        summary = {(r["task"], r["statistic"]): r for r in csv.DictReader(fh)}
    assert set(summary) == {
        (t, s)
        for t in ("generator", "regressor")
        for s in (
            "bend_rate",
            "scaled_bend_rate",
            "output_agreement",
            "output_correlation",
            "slope_agreement",
            "output_correlation_at_starts",
        )
    }
    # the target agrees with itself at every point, and bends more at each kept point than at its control
    assert all(
        float(summary[(t, s)]["target_rate"]) == 1.0
        for t in ("generator", "regressor")
        for s in ("bend_rate", "output_agreement")
    )
    assert all(
        abs(float(summary[(t, s)]["target_rate"]) - 1.0) < 1e-6
        for t in ("generator", "regressor")
        for s in ("output_correlation", "slope_agreement", "output_correlation_at_starts")
    )
    with open(tmp_path / "rates.csv") as fh:
        rates = list(csv.DictReader(fh))
    assert {r["role"] for r in rates} == {"positive", "negative"}
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.suffix in (".keras", ".npz")}
    assert exp.main(["--config", cfg, "--out", str(tmp_path), "--quiet", "--tasks", "regressor"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())
