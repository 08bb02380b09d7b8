"""Calibrated verdicts (issue 16 item 3) and the ownership report (item 4)."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from ipguard_tf.cli import main
from ipguard_tf.core.calibration import Calibration, calibration_of, subset_metadata, with_calibration
from ipguard_tf.core.errors import IPGuardError, ParameterError


def _sim(rng, k, n, a=4.0, b=12.0):
    """k null models' per-point matches: each model's rate from Beta(a, b), its points Bernoulli at that rate."""
    q = rng.beta(a, b, size=k)
    return rng.random((k, n)) < q[:, None]


def test_p_value_is_a_tail_probability_and_the_threshold_its_first_crossing():
    rng = np.random.default_rng(0)
    cal = Calibration(tuple(f"n{i}" for i in range(20)), _sim(rng, 20, 100), fpr=0.01)
    p = [cal.p_value(m) for m in range(101)]
    assert p[0] == 1.0 and all(a >= b for a, b in zip(p, p[1:])) and p[100] < 1e-6
    t = cal.threshold_matches
    assert cal.p_value(t) <= 0.01 < cal.p_value(t - 1)
    assert cal.threshold == t / 100 and 0 < cal.threshold < 1


def test_overdispersed_negatives_get_a_beta_binomial_wider_than_the_binomial():
    from scipy import stats

    rng = np.random.default_rng(1)
    cal = Calibration(tuple(f"n{i}" for i in range(30)), _sim(rng, 30, 100, a=2, b=6), fpr=0.01)
    assert cal.rho > 0.05 and cal.beta_params is not None
    m = int(np.max(cal.matches.sum(1)))  # the most agreeing negative
    binom_p = stats.binom.sf(m - 1, 100, cal.mean)
    assert cal.p_value(m) > 10 * binom_p  # the binomial would call this independent model a copy
    assert cal.p_value(m) > 0.01  # the beta-binomial does not
    # negatives that agree like binomial draws of one rate: rho 0, the binomial itself
    same = rng.random((30, 100)) < 0.2
    c2 = Calibration(tuple(f"n{i}" for i in range(30)), same)
    if c2.rho == 0:
        assert c2.p_value(40) == pytest.approx(stats.binom.sf(39, 100, c2.mean))


def test_calibrated_threshold_keeps_the_false_positive_rate_near_its_target():
    """Calibrate on 30 simulated negatives, then measure the exact false-positive rate of the threshold under the
    true null; averaged over 200 calibrations it stays near 1 % (estimation noise in the tail allowed for)."""
    from scipy import stats

    rng = np.random.default_rng(2)
    a, b, n = 4.0, 12.0, 100
    fprs = []
    for _ in range(200):
        cal = Calibration(tuple(str(i) for i in range(30)), _sim(rng, 30, n, a, b), fpr=0.01)
        fprs.append(stats.betabinom.sf(cal.threshold_matches - 1, n, a, b))
    assert 0.002 < np.mean(fprs) < 0.025, np.mean(fprs)


def test_all_or_nothing_agreement_keeps_p_values_finite():
    cal = Calibration(("a", "b", "c"), np.zeros((3, 50), bool))
    # mean agreement kept at half a match of 3 x 50: P(M >= 1) = 1 - (1 - 1/300)^50
    assert cal.p_value(1) == pytest.approx(1 - (1 - 1 / 300) ** 50) and cal.p_value(0) == 1.0
    assert 0 < cal.p_value(5) < 1e-6
    cal = Calibration(("a", "b", "c"), np.ones((3, 50), bool))
    assert cal.p_value(50) > 0.5 and cal.threshold > 1  # nothing is unlikely: no threshold


@pytest.mark.parametrize(
    "kw, expect",
    [
        (dict(negatives=("a",), matches=np.zeros((1, 5), bool)), "at least 2"),
        (dict(negatives=("a", "b"), matches=np.zeros((3, 5), bool)), "holds 3 rows"),
        (dict(negatives=("a", "b"), matches=np.zeros((2, 5), bool), fpr=0.0), "fpr"),
        (dict(negatives=("a", "b"), matches=np.zeros((2, 5), bool), fpr=0.7), "fpr"),
    ],
)
def test_bad_calibrations_raise(kw, expect):
    with pytest.raises(ParameterError, match=expect):
        Calibration(**kw)


def test_metadata_round_trip_subset_and_tamper_check(tmp_path):
    from ipguard_tf.core.errors import FingerprintFileError
    from ipguard_tf.core.fingerprint import Fingerprint
    from ipguard_tf.io.fingerprint_file import load_fingerprint, save_fingerprint

    rng = np.random.default_rng(3)
    n = 37
    fp = Fingerprint(
        x=rng.random((n, 4, 4, 1)),
        y=rng.integers(0, 3, n),
        source=np.zeros(n),
        target=np.zeros(n),
        iterations=np.zeros(n),
        objective=np.zeros(n),
        converged=rng.random(n) < 0.6,
        distortion=np.zeros(n),
        metadata={"num_classes": 3, "statistic": "matching_rate"},
    )
    cal = Calibration(tuple(f"m{i}" for i in range(12)), rng.random((12, n)) < 0.3, fpr=0.05, source="zoo")
    path = tmp_path / "fp.npz"
    save_fingerprint(with_calibration(fp, cal), path)
    back = calibration_of(load_fingerprint(path))
    assert np.array_equal(back.matches, cal.matches) and back.negatives == cal.negatives and back.fpr == 0.05
    assert back.threshold == cal.threshold
    conv = load_fingerprint(path).converged_only()
    sub = calibration_of(conv)
    assert sub.n == conv.__len__() and np.array_equal(sub.matches, cal.matches[:, fp.converged])
    meta = subset_metadata({"x": 1}, np.ones(3, bool))
    assert meta == {"x": 1}
    # the calibration is covered by the file's SHA-256: an edited threshold is refused
    import io
    import zipfile

    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    m = json.loads(arrays["metadata"].tobytes())
    m["calibration"]["rates"][0] = 0.0
    arrays["metadata"] = np.frombuffer(json.dumps(m, sort_keys=True).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(buf.getvalue())
    assert zipfile.is_zipfile(bad)
    with pytest.raises(FingerprintFileError):
        load_fingerprint(bad)


def _model(seed):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inp)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A target, 12 independent models (random initialisations) as negatives, a fingerprint of 100 points and
    its calibration through the command line."""
    d = tmp_path_factory.mktemp("cal")
    _model(0).save(d / "target.keras")
    neg = d / "negatives"
    neg.mkdir()
    for s in range(1, 13):
        _model(100 + s).save(neg / f"m{s:02d}.keras")
    fp = d / "fp.npz"
    assert (
        main(
            [
                "-q",
                "extract",
                "--model",
                str(d / "target.keras"),
                "--init",
                "R",
                "--label",
                "R",
                "--n",
                "100",
                "--max-iter",
                "20",
                "--seed",
                "0",
                "--out",
                str(fp),
                "--no-checkpoint",
            ]
        )
        == 0
    )
    return d, fp


def test_calibrate_then_verify_gives_p_values_and_the_calibrated_verdict(calibrated, capsys):
    from ipguard_tf.io.fingerprint_file import load_fingerprint

    d, fp = calibrated
    capsys.readouterr()
    assert main(["-q", "verify", "--fingerprint", str(fp), "--suspect", str(d / "target.keras")]) == 0
    assert "not calibrated" in capsys.readouterr().out
    out = d / "fp_cal.npz"
    assert (
        main(["-q", "calibrate", "--fingerprint", str(fp), "--negatives", str(d / "negatives"), "--out", str(out)]) == 0
    )
    said = capsys.readouterr().out
    assert "calibrated on 12 negatives" in said and "wrote" in said
    cal = calibration_of(load_fingerprint(out))
    assert cal.k == 12 and cal.n == 100 and cal.negatives[0].endswith("m01.keras")
    # the negative with the median rate, verified as a suspect: a large p-value; the target: a tiny one
    j = int(np.argsort(cal.rates)[len(cal.rates) // 2])
    assert (
        main(
            [
                "-q",
                "verify",
                "--fingerprint",
                str(out),
                "--suspect",
                str(d / "target.keras"),
                "--suspect",
                cal.negatives[j],
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["p_value"] < 1e-6 and rows[0]["verdict"] == 1
    assert rows[1]["p_value"] > 0.2 and rows[1]["verdict"] == 0
    assert rows[1]["matching_rate"] == pytest.approx(cal.rates[j])
    assert rows[0]["threshold"] == pytest.approx(cal.threshold) and cal.threshold < 1
    assert rows[0]["ci95_low"] <= rows[0]["matching_rate"] <= rows[0]["ci95_high"]
    assert main(["-q", "verify", "--fingerprint", str(out), "--suspect", str(d / "target.keras")]) == 0
    table = capsys.readouterr().out
    assert (
        "p-value (H0: independent)" in table and "calibrated at false-positive rate 0.01" in table and "95% CI" in table
    )
    # issue 34: where the calibration came from, and what seed grinding would take (about 1/p fingerprints)
    assert "this calibration came from inside the fingerprint file" in table
    assert f"1/p = {1 / rows[0]['p_value']:.3g} fingerprints" in table and "publish a fingerprint's SHA-256" in table


def test_calibrate_errors_are_one_line(calibrated, tmp_path, capsys):
    d, fp = calibrated
    for argv, expect in (
        (["calibrate", "--fingerprint", str(fp), "--negatives", str(tmp_path)], "neither a zoo"),
        (["calibrate", "--fingerprint", str(fp), "--negatives", str(tmp_path / "nope")], "not a folder"),
    ):
        code = main(["-q"] + argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and expect in err[0], err
    with pytest.raises(SystemExit) as exc:  # argparse: one line, exit 2
        main(["-q", "calibrate", "--fingerprint", str(fp), "--negatives", str(d / "negatives"), "--fpr", "0.9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "0.5" in err[0]


def test_ownership_report_is_self_contained_and_renders(calibrated, tmp_path, capsys):
    d, fp = calibrated
    out = tmp_path / "fp_cal.npz"
    assert (
        main(["-q", "calibrate", "--fingerprint", str(fp), "--negatives", str(d / "negatives"), "--out", str(out)]) == 0
    )
    report = tmp_path / "report.html"
    assert (
        main(
            [
                "-q",
                "verify",
                "--fingerprint",
                str(out),
                "--suspect",
                str(d / "target.keras"),
                "--suspect",
                str(d / "negatives" / "m03.keras"),
                "--report",
                str(report),
            ]
        )
        == 0
    )
    page = report.read_text()
    from ipguard_tf.io.fingerprint_file import load_fingerprint

    f = load_fingerprint(out)
    assert f.sha256 in page and f.metadata["target"]["weights_sha256"] in page and f.metadata["created"] in page
    assert "p-value" in page and "Clopper-Pearson" in page and "verified as a copy" in page
    assert page.count("data:image/png;base64,") >= 1 and "http://" not in page and "https://" not in page
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless chromium here (Debian package chromium): the page was checked as text only")
    shot = tmp_path / "shot.png"
    r = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--screenshot={shot}",
            "--window-size=1000,1400",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and shot.exists(), r.stderr[-500:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[0] >= 1000 and img.shape[1] >= 900
    assert (img < 128).any(axis=2).mean() > 0.002  # text and plots drawn, not a blank page
    assert (np.abs(img[..., 0].astype(int) - img[..., 2]) > 60).any()  # the coloured plot and verdicts rendered


def test_distance_fingerprints_are_not_calibrated(calibrated):
    from dataclasses import replace

    from ipguard_tf.io.fingerprint_file import load_fingerprint
    from ipguard_tf.verification.calibration import calibrate

    d, fp = calibrated
    f = load_fingerprint(fp)
    f = replace(f, metadata=dict(f.metadata, statistic="sac_distance"))
    with pytest.raises(IPGuardError, match="matching-rate"):
        calibrate(f, [("a", _model(1)), ("b", _model(2))], progress=False)
