"""``ipguard audit`` (issue 34 items 1-3): a fingerprint file whose points are not the target's own search results
(natural images two models label alike, images picked for agreement, points optimised on both models, a made-up
calibration) makes ``verify`` call an unrelated model a copy; the audit re-derives the starts from the seed and
replays the search on the target, and rejects every such file (exit 3) while the target's own fingerprints pass
(exit 0), also when made in another process or from a Keras 2 ``.h5`` file."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import SHAPE, make_tiny_keras3, make_tiny_tf_keras

from ipguard_tf.cli import main
from ipguard_tf.core.calibration import Calibration, with_calibration
from ipguard_tf.core.fingerprint import Fingerprint
from ipguard_tf.io.fingerprint_file import load_fingerprint, save_fingerprint

K = 0.05
MAX_ITER = 60
LR = 0.005  # 5 of the 6 points converge within the 60 iterations: both kinds of point are audited
N = 6


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A (the target) and B (independent), their training data as an .npz, and A's genuine fingerprint made by
    ``ipguard extract`` in another process."""
    d = tmp_path_factory.mktemp("audit")
    make_tiny_keras3(0).save(d / "a.keras")
    make_tiny_keras3(1).save(d / "b.keras")
    rng = np.random.default_rng(5)
    x = rng.random((80,) + SHAPE, dtype=np.float32)
    np.savez(d / "data.npz", x=x)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ipguard_tf.cli",
            "-q",
            "extract",
            "--model",
            str(d / "a.keras"),
            "--data",
            str(d / "data.npz"),
            "--n",
            str(N),
            "--k",
            str(K),
            "--max-iter",
            str(MAX_ITER),
            "--lr",
            str(LR),
            "--seed",
            "3",
            "--out",
            str(d / "genuine.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return d


def _audit(files, fp_path, *extra, model="a.keras", capsys=None):
    code = main(
        ["-q", "audit", "--fingerprint", str(fp_path), "--model", str(files / model), "--data", str(files / "data.npz")]
        + list(extra)
    )
    out = capsys.readouterr() if capsys is not None else None
    return code, out


def _verify_rate(files, fp_path, suspect, capsys):
    capsys.readouterr()
    assert main(["-q", "verify", "--fingerprint", str(fp_path), "--suspect", str(files / suspect), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    return row["matching_rate"], row["verdict"]


def _models(files):
    import keras

    return keras.models.load_model(files / "a.keras"), keras.models.load_model(files / "b.keras")


def _train_x(files):
    from ipguard_tf.io.owner_data import load_owner_data

    return load_owner_data(str(files / "data.npz"), seed=3).x_train


def _forged(genuine: Fingerprint, x: np.ndarray, a_model, train_x) -> Fingerprint:
    """The claimant's file: the genuine file's metadata (seed, starts, hash) around points of their choosing, with
    every record made to look right (the claimant knows the seed and A): the derived source and target labels,
    A's labels, the distances from the derived starts, flagged unconverged after the whole budget."""
    from ipguard_tf.methods.ipguard import IPGuard
    from ipguard_tf.models.classifier import as_classifier

    clf = as_classifier(a_model)
    n = len(x)
    st = IPGuard(**genuine.metadata["params"]).derive_starts(clf, n, train_x)
    return replace(
        genuine,
        x=x.astype(np.float32),
        y=clf.predict_labels(x),
        source=st.src,
        target=st.tgt,
        iterations=np.full(n, MAX_ITER),
        objective=np.ones(n, np.float32),
        converged=np.zeros(n, bool),
        distortion=np.linalg.norm((x - st.x0).reshape(n, -1), axis=1),
        sha256=None,
    )


# -- genuine fingerprints pass ------------------------------------------------------------------------------------
def test_genuine_fingerprint_made_in_another_process_passes(files, capsys):
    fp = load_fingerprint(files / "genuine.npz")
    starts = fp.metadata["starts"]
    assert starts["generator"] == "numpy PCG64 default_rng(seed)" and starts["kind"] == "data"
    assert starts["data_len"] == len(_train_x(files)) and len(starts["data_sha256"]) == 64
    code, out = _audit(files, files / "genuine.npz", capsys=capsys)
    assert code == 0, out.out + out.err
    assert f"replayed {N} of {N} points" in out.out and f"{N} identical" in out.out  # bit-identical across processes
    assert "verdict: PASS" in out.out and "bit-identical" in out.out.splitlines()[-1]
    assert "made on this platform" in out.out
    code, out = _audit(
        files, files / "genuine.npz", "--points", "2", "--seed-for-sample", "11", "--json", capsys=capsys
    )
    rep = json.loads(out.out)
    assert code == 0 and rep["verdict"] == "pass" and rep["replayed"] == 2 and rep["sample_seed"] == 11
    assert rep["counts"]["inconsistent"] == 0 and rep["miss_chance"]["0.5"] <= 0.5**2
    assert rep["made_on"] and set(load_fingerprint(files / "genuine.npz").metadata["platform"]) >= {
        "cpu",
        "isa",
        "gpus",
    }
    code, out = _audit(files, files / "genuine.npz", "--strict", capsys=capsys)
    assert code == 0 and f"{N} identical" in out.out


def test_genuine_keras2_h5_passes(files, tmp_path, capsys):
    a, _ = _models(files)
    h5 = tmp_path / "a2.h5"
    make_tiny_tf_keras(a.get_weights(), softmax=True).save(h5)
    out = tmp_path / "fp_h5.npz"
    args = ["--n", "4", "--k", str(K), "--max-iter", str(MAX_ITER), "--seed", "4", "--init", "R", "--out", str(out)]
    assert main(["-q", "extract", "--model", str(h5), *args]) == 0
    assert load_fingerprint(out).metadata["starts"] == {"generator": "numpy PCG64 default_rng(seed)", "kind": "uniform"}
    capsys.readouterr()
    assert main(["-q", "audit", "--fingerprint", str(out), "--model", str(h5)]) == 0
    assert "verdict: PASS" in capsys.readouterr().out


def test_a_pass_that_is_not_bit_identical_says_what_it_does_not_rule_out(files, monkeypatch):
    """Replays that are only close (another platform, a subset of the batches) pass within the tolerance, and the
    report says that a forger could have moved the points that far; a tighter tolerance or --strict fails them."""
    import ipguard_tf.verification.audit as A

    a, _ = _models(files)
    fp = load_fingerprint(files / "genuine.npz")
    monkeypatch.setattr(A, "IDENTICAL_LINF", -1.0)  # as if on other hardware: no replay counts as identical
    rep = A.audit(fp, a, train_x=_train_x(files))
    assert rep.verdict == "pass" and not rep.identical and rep.counts()["close"] == N
    text = "\n".join(rep.lines())
    assert "not the model's own points moved within the tolerance" in text and "--strict" in text
    assert "(within the tolerance; exit 0)" in text
    assert A.audit(fp, a, train_x=_train_x(files), strict=True).verdict == "fail"


@pytest.mark.parametrize(
    "method, params",
    [
        ("random", {}),
        ("fgsm", {"epsilon": 0.05}),
        ("igsm", {"epsilon": 0.05, "max_iter": 10}),
        ("cw", {"kappa": 0.0, "max_iter": 10, "binary_search_steps": 2}),
        ("sac-m", {}),
        ("sac-w", {}),
    ],
)
def test_other_seeded_methods_replay(method, params, tiny_model, tiny_data):
    from ipguard_tf.core import registry
    from ipguard_tf.verification.audit import audit

    labels = np.arange(len(tiny_data)) % 4  # SAC-w starts at the examples the model gets wrong
    fp = registry.build(method, seed=2, **params).generate(tiny_model, 4, tiny_data, train_y=labels)
    rep = audit(fp, tiny_model, train_x=tiny_data, train_y=labels)
    assert rep.verdict == "pass" and rep.exit_code == 0, rep.lines()
    if method.startswith("sac"):  # SAC's statistic reads the stored outputs: they are checked against the model
        forged = replace(fp, outputs=fp.outputs[::-1].copy(), sha256=None)
        assert audit(forged, tiny_model, train_x=tiny_data, train_y=labels).verdict == "fail"


# -- forgeries are rejected ---------------------------------------------------------------------------------------
def test_natural_images_both_models_label_alike_are_rejected(files, tmp_path, capsys):
    """Failing first: verify calls B a copy of A on such a file; the audit rejects it."""
    a, b = _models(files)
    genuine = load_fingerprint(files / "genuine.npz")
    x = np.random.default_rng(9).random((400,) + SHAPE, dtype=np.float32)  # the claimant's "test images"
    alike = x[np.argmax(a.predict(x, verbose=0), 1) == np.argmax(b.predict(x, verbose=0), 1)][:N]
    forged = tmp_path / "natural.npz"
    save_fingerprint(_forged(genuine, alike, a, _train_x(files)), forged)
    assert _verify_rate(files, forged, "b.keras", capsys) == (1.0, 1)  # the problem: B "is a copy"
    code, out = _audit(files, forged, capsys=capsys)
    assert code == 3 and "verdict: FAIL" in out.out and f"{N} inconsistent" in out.out
    assert "replay ends" in out.out


def test_points_selected_where_the_claimants_own_models_disagree_are_rejected(files, tmp_path, capsys):
    a, b = _models(files)
    c, d = make_tiny_keras3(2), make_tiny_keras3(3)
    x = np.random.default_rng(10).random((2000,) + SHAPE, dtype=np.float32)
    la, lb, lc, ld = (np.argmax(m.predict(x, verbose=0), 1) for m in (a, b, c, d))
    pick = x[(la == lb) & (la != lc) & (la != ld)][:N]
    assert len(pick) == N
    forged = tmp_path / "selected.npz"
    save_fingerprint(_forged(load_fingerprint(files / "genuine.npz"), pick, a, _train_x(files)), forged)
    assert _verify_rate(files, forged, "b.keras", capsys) == (1.0, 1)
    code, out = _audit(files, forged, "--points", "3", capsys=capsys)
    assert code == 3 and "verdict: FAIL" in out.out


def _optimise_on_both(a, b, x0, src, tgt, k, steps=300):
    """Points where Eq. 5 holds on A and B labels them A's target label: Adam on Eq. 5 (A) + B's cross-entropy."""
    import tensorflow as tf

    from ipguard_tf.methods.ipguard import ipguard_objective

    x = tf.Variable(x0)
    opt = tf.keras.optimizers.Adam(0.01)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(ipguard_objective(a(x), src, tgt, k + 0.05)) + tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(tgt, b(x))
            )
        opt.apply_gradients([(tape.gradient(loss, x), x)])
        x.assign(tf.clip_by_value(x, 0.0, 1.0))
    return x.numpy()


def test_points_optimised_on_both_models_are_rejected(files, tmp_path, capsys):
    """The strongest of the three: from the very starts the seed derives (the claimant knows the seed and A), with
    the file's source and target labels, the claimant optimises Eq. 5 on A and B's agreement together."""
    from ipguard_tf.methods.ipguard import IPGuard, ipguard_objective
    from ipguard_tf.models.classifier import as_classifier

    a, b = _models(files)
    genuine = load_fingerprint(files / "genuine.npz")
    clf = as_classifier(a)
    st = IPGuard(**genuine.metadata["params"]).derive_starts(clf, N, _train_x(files))
    x = _optimise_on_both(a, b, st.x0, st.src, st.tgt, K)
    obj = ipguard_objective(clf.predict_logits(x), st.src, st.tgt, K).numpy()
    ok = (obj <= 0) & (np.argmax(b.predict(x, verbose=0), 1) == st.tgt)
    assert ok.sum() >= N // 2, (obj, ok)
    fp = replace(
        genuine,
        x=x,
        y=clf.predict_labels(x),
        source=st.src,
        target=st.tgt,
        converged=ok,
        distortion=np.linalg.norm((x - st.x0).reshape(N, -1), axis=1),
        sha256=None,
    )
    forged = tmp_path / "optimised.npz"
    save_fingerprint(fp, forged)
    rate, _ = _verify_rate(files, forged, "b.keras", capsys)
    assert rate >= 0.5
    code, out = _audit(files, forged, capsys=capsys)
    assert code == 3 and "verdict: FAIL" in out.out
    assert f"0 identical, 0 close, 0 close to their claimed trajectory, {N} inconsistent" in out.out


def test_a_made_up_calibration_is_ignored(files, tmp_path, capsys):
    a, _ = _models(files)
    genuine = load_fingerprint(files / "genuine.npz")
    matches = np.random.default_rng(1).random((3, N)) < 0.2  # "independent models rarely agree on these points"
    cal = Calibration(negatives=("mine-1", "mine-2", "mine-3"), matches=matches, source="made up")
    # on the genuine points: the points pass, the calibration is ignored and said so
    packed = tmp_path / "genuine_cal.npz"
    save_fingerprint(with_calibration(genuine, cal), packed)
    code, out = _audit(files, packed, capsys=capsys)
    assert code == 0 and "calibration: the file holds one; ignored" in out.out
    code, out = _audit(files, packed, "--trust-calibration", capsys=capsys)
    assert code == 0 and "trusted on --trust-calibration" in out.out
    # on foreign points: rejected, whatever the calibration says
    x = np.random.default_rng(12).random((N,) + SHAPE, dtype=np.float32)
    forged = tmp_path / "forged_cal.npz"
    save_fingerprint(with_calibration(_forged(genuine, x, a, _train_x(files)), cal), forged)
    code, out = _audit(files, forged, "--trust-calibration", capsys=capsys)
    assert code == 3 and "verdict: FAIL" in out.out


# -- the wrong model, old files, models that cannot replay ------------------------------------------------------
def test_wrong_model_fails_on_the_hash_and_on_the_points(files, capsys):
    code, out = _audit(files, files / "genuine.npz", model="b.keras", capsys=capsys)
    lines = out.out.splitlines()
    assert code == 3 and "not the fingerprint's model" in lines[1]  # said first, after the heading
    assert "inconsistent" in out.out and "verdict: FAIL" in out.out


def test_search_records_that_cannot_be_true_fail(files, tmp_path, capsys):
    """A file that flags a point converged where Eq. 5 does not hold, or unconverged before the whole budget ran."""
    fp = load_fingerprint(files / "genuine.npz")
    a, _ = _models(files)
    from ipguard_tf.models.classifier import as_classifier
    from ipguard_tf.verification.audit import audit

    assert 0 < fp.n_converged < N  # both kinds of point
    claims = replace(fp, converged=np.ones(N, bool), sha256=None)  # the unconverged one "converged" too
    rep = audit(claims, a, train_x=_train_x(files), points=1, sample_seed=0)
    assert rep.verdict == "fail" and "goal does not hold" in "\n".join(rep.lines())
    short = replace(fp, iterations=np.where(fp.converged, fp.iterations, 3), sha256=None)
    rep = audit(short, as_classifier(a), train_x=_train_x(files), points=1, sample_seed=0)
    assert rep.verdict == "fail" and "short of the whole budget" in "\n".join(rep.lines())


def test_old_fingerprint_without_starts_is_not_replayable(files, tmp_path, capsys):
    fp = load_fingerprint(files / "genuine.npz")
    meta = {k: v for k, v in fp.metadata.items() if k != "starts"}
    old = tmp_path / "old.npz"
    save_fingerprint(replace(fp, metadata=meta, sha256=None), old)
    code, out = _audit(files, old, capsys=capsys)
    assert code == 3 and "not replayable: made before starts were recorded" in out.out
    assert "verdict: NOT REPLAYABLE" in out.out


def test_methods_with_their_own_generate_cannot_be_replayed(files, capsys, tmp_path):
    from ipguard_tf.methods.base import FingerprintMethod
    from ipguard_tf.methods.cae import CAE
    from ipguard_tf.methods.ipguard import IPGuard
    from ipguard_tf.methods.tafa.method import TAFA

    assert IPGuard.replayable() and not CAE.replayable() and not TAFA.replayable()
    assert FingerprintMethod.replayable()
    fp = load_fingerprint(files / "genuine.npz")
    cae = tmp_path / "cae.npz"
    save_fingerprint(replace(fp, metadata=dict(fp.metadata, method="cae"), sha256=None), cae)
    code, out = _audit(files, cae, capsys=capsys)
    assert code == 3 and "cannot be replayed" in out.out and "verdict: NOT REPLAYABLE" in out.out


def test_non_differentiable_model_never_passes(files):
    from ipguard_tf.models.classifier import Classifier, as_classifier
    from ipguard_tf.verification.audit import audit

    a, _ = _models(files)
    fp = load_fingerprint(files / "genuine.npz")
    keras_clf = as_classifier(a)
    outputs_only = Classifier(  # what a TFLite or ONNX file of A gives: outputs, no gradient
        output_fn=lambda x: keras_clf.predict_logits(x),
        input_shape=SHAPE,
        num_classes=4,
        name="a.tflite",
        weights_sha256=keras_clf.weights_sha256,
    )
    rep = audit(fp, outputs_only, train_x=_train_x(files))
    assert rep.verdict == "incomplete" and rep.exit_code == 3
    assert "not differentiable" in rep.problems[0] and "INCOMPLETE" in rep.lines()[-1]


def test_other_training_data_fails(files, tmp_path, capsys):
    other = tmp_path / "other.npz"
    np.savez(other, x=np.random.default_rng(6).random((80,) + SHAPE, dtype=np.float32))
    code = main(["-q", "audit", "--fingerprint", str(files / "genuine.npz"), "--model", str(files / "a.keras")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "give it with --data or --dataset" in err[0]
    code = main(
        [
            "-q",
            "audit",
            "--fingerprint",
            str(files / "genuine.npz"),
            "--model",
            str(files / "a.keras"),
            "--data",
            str(other),
        ]
    )
    out = capsys.readouterr().out
    assert code == 3 and "is not the one the fingerprint records" in out


@pytest.mark.parametrize("what", ["missing", "corrupt"])
def test_bad_files_are_one_line_user_errors(files, tmp_path, capsys, what):
    path = tmp_path / "bad.npz"
    if what == "corrupt":
        path.write_bytes(b"not a zip")
    code = main(["-q", "audit", "--fingerprint", str(path), "--model", str(files / "a.keras")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("ipguard: error:") and "Traceback" not in err[0]
    code = main(["-q", "audit", "--fingerprint", str(files / "genuine.npz"), "--model", str(tmp_path / "no.keras")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1


@pytest.mark.parametrize("method", ["akh", "random"])
def test_genuine_fingerprint_of_a_tflite_exported_target_passes(files, tmp_path, capsys, method):
    """Item 3: a target exported to TFLite. Its file gives outputs, not gradients, so a search cannot run on it
    (above: IPGuard's points are audited with the Keras file); the methods that need no gradient (AKH: examples
    the target misclassifies; random points) are made on the ``.tflite`` file itself by ``ipguard extract`` and
    replay on it: the audit passes, on the file's own content hash. Another model's file fails on the hash."""
    from ipguard_tf.models import tflite

    a, _ = _models(files)
    tflite.save(tflite.convert(a), tmp_path / "a.tflite")
    rng = np.random.default_rng(8)
    x = rng.random((80,) + SHAPE, dtype=np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=rng.integers(0, 4, 80))  # labels A mostly gets wrong: AKH has its pick
    fp = tmp_path / f"{method}.npz"
    args = ["--method", method, "--n", "5", "--seed", "4", "--data", str(tmp_path / "data.npz")]
    assert main(["-q", "extract", "--model", str(tmp_path / "a.tflite"), *args, "--out", str(fp)]) == 0
    capsys.readouterr()
    audit_args = ["-q", "audit", "--fingerprint", str(fp), "--data", str(tmp_path / "data.npz")]
    code = main(audit_args + ["--model", str(tmp_path / "a.tflite"), "--strict"])
    out = capsys.readouterr().out
    assert code == 0 and "verdict: PASS" in out and "5 of 5" in out, out
    assert main(audit_args + ["--model", str(files / "b.keras")]) == 3
    assert "it is not the fingerprint's model" in capsys.readouterr().out
