"""The ipguard command: success paths and one-line errors with a non-zero exit."""

import json
import os
import subprocess
import sys

import pytest

from ipguard_tf.cli import main
from ipguard_tf.io.data import FASHION_MNIST_DEBIAN_DIR

HAVE_FMNIST = os.path.exists(os.path.join(FASHION_MNIST_DEBIAN_DIR, "train-images-idx3-ubyte.gz")) or bool(
    os.environ.get("IPGUARD_FASHION_MNIST_DIR")
)
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST IDX files not installed")


def _fmnist_model(seed=0, softmax=False):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, activation="softmax" if softmax else None)(x)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    a = _fmnist_model(0)
    a.save(d / "target.keras")
    b = _fmnist_model(1, softmax=True)
    b.save(d / "other.keras")
    return d


def _one_line_error(capsys, code, expect):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    assert expect in err[0], err
    assert "Traceback" not in err[0]


@needs_fmnist
def test_extract_and_verify(model_files, tmp_path, capsys):
    out = tmp_path / "fp.npz"
    code = main(
        [
            "-q",
            "extract",
            "--model",
            str(model_files / "target.keras"),
            "--dataset",
            "fashion_mnist",
            "--n",
            "6",
            "--max-iter",
            "30",
            "--k",
            "0.5",
            "--seed",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and out.exists()
    assert "6 points" in capsys.readouterr().out
    code = main(
        [
            "-q",
            "verify",
            "--fingerprint",
            str(out),
            "--suspect",
            str(model_files / "target.keras"),
            "--suspect",
            str(model_files / "other.keras"),
            "--json",
        ]
    )
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["suspect"] for r in rows] == [str(model_files / "target.keras"), str(model_files / "other.keras")]
    assert rows[0]["matching_rate"] == 1.0 and rows[0]["verdict"] == 1
    assert rows[0]["ci95_high"] == 1.0 and 0.5 < rows[0]["ci95_low"] < 0.6
    assert {"suspect", "matching_rate", "verdict"} <= set(rows[1])
    code = main(["-q", "verify", "--fingerprint", str(out), "--suspect", str(model_files / "target.keras")])
    table = capsys.readouterr().out
    assert code == 0 and "matching_rate" in table and "1.00" in table
    assert "95% CI (Clopper-Pearson)" in table and "[0.54, 1.00]" in table  # 6 of 6 points match
    # --converged-only: the same verification on the converged points only (issue 16)
    from ipguard_tf.io.fingerprint_file import load_fingerprint
    from ipguard_tf.verification.suspects import verify

    out = tmp_path / "fp300.npz"
    assert (
        main(
            [
                "-q",
                "extract",
                "--model",
                str(model_files / "target.keras"),
                "--dataset",
                "fashion_mnist",
                "--n",
                "6",
                "--max-iter",
                "300",
                "--k",
                "0.5",
                "--seed",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    capsys.readouterr()
    fp = load_fingerprint(out)
    assert 0 < fp.n_converged
    code = main(
        [
            "-q",
            "verify",
            "--fingerprint",
            str(out),
            "--suspect",
            str(model_files / "other.keras"),
            "--json",
            "--converged-only",
        ]
    )
    row = json.loads(capsys.readouterr().out)[0]
    assert code == 0 and row["n"] == fp.n_converged
    assert row["matching_rate"] == verify(fp.converged_only(), str(model_files / "other.keras")).value


@needs_fmnist
def test_extract_random_init(model_files, tmp_path):
    from ipguard_tf import load_fingerprint

    out = tmp_path / "fp.npz"
    assert (
        main(
            [
                "-q",
                "extract",
                "--model",
                str(model_files / "target.keras"),
                "--init",
                "R",
                "--label",
                "R",
                "--n",
                "4",
                "--max-iter",
                "5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    fp = load_fingerprint(out)
    assert fp.metadata["strategy"] == "RR" and fp.metadata["params"]["max_iter"] == 5
    assert fp.metadata["command"].startswith("ipguard ")


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["extract"], "required"),
        (["extract", "--model", "m.keras", "--out", "f.npz", "--n", "0"], "positive integer"),
        (["extract", "--model", "m.keras", "--out", "f.npz", "--k", "abc"], "number"),
        (["extract", "--model", "m.keras", "--out", "f.npz", "--init", "Z"], "invalid choice"),
        (["verify", "--fingerprint", "f.npz", "--suspect", "s", "--threshold", "2"], "in [0, 1]"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_arguments(argv, expect, capsys):
    with pytest.raises(SystemExit) as ei:
        main(argv)
    _one_line_error(capsys, ei.value.code, expect)


def test_missing_model_file(tmp_path, capsys):
    code = main(
        ["-q", "extract", "--model", str(tmp_path / "nope.keras"), "--init", "R", "--out", str(tmp_path / "f.npz")]
    )
    _one_line_error(capsys, code, "does not exist")


def test_missing_fingerprint(tmp_path, capsys):
    code = main(["-q", "verify", "--fingerprint", str(tmp_path / "nope.npz"), "--suspect", "x.keras"])
    _one_line_error(capsys, code, "does not exist")


def test_corrupt_fingerprint(tmp_path, capsys):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    code = main(["-q", "verify", "--fingerprint", str(tmp_path / "bad.npz"), "--suspect", "x.keras"])
    _one_line_error(capsys, code, "truncated or not a fingerprint")


@needs_fmnist
def test_wrong_shape_model(tmp_path, capsys):
    import keras

    m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    m.save(tmp_path / "small.keras")
    code = main(
        [
            "-q",
            "extract",
            "--model",
            str(tmp_path / "small.keras"),
            "--dataset",
            "fashion_mnist",
            "--n",
            "2",
            "--out",
            str(tmp_path / "f.npz"),
        ]
    )
    _one_line_error(capsys, code, "expects (8, 8, 1)")
    assert not (tmp_path / "f.npz").exists()


def test_bad_data_dir(model_files, tmp_path, capsys):
    code = main(
        [
            "-q",
            "extract",
            "--model",
            str(model_files / "target.keras"),
            "--data-dir",
            str(tmp_path),
            "--n",
            "2",
            "--out",
            str(tmp_path / "f.npz"),
        ]
    )
    _one_line_error(capsys, code, "does not hold the four Fashion-MNIST IDX files")


def test_subprocess_error_is_one_line_without_traceback(tmp_path):
    """The real console entry point: TensorFlow's start-up chatter must not surround the error line."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    r = subprocess.run(
        [sys.executable, "-m", "ipguard_tf.cli", "verify", "--fingerprint", str(bad), "--suspect", "x"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ipguard: error:"), r.stderr


@needs_fmnist
@pytest.mark.parametrize(
    "method, extra",
    [
        ("ipguard", ["--k", "0.5", "--max-iter", "20"]),
        ("random", []),
        ("fgsm", ["--epsilon", "0.05"]),
        ("igsm", ["--epsilon", "0.05", "--max-iter", "20"]),
        ("cw", ["--k", "0", "--max-iter", "10", "--cw-steps", "2"]),
    ],
)
def test_every_method_extracts_and_verifies_at_one(method, extra, model_files, tmp_path, capsys):
    from ipguard_tf import load_fingerprint

    out = tmp_path / f"{method}.npz"
    target = str(model_files / "target.keras")
    assert (
        main(
            [
                "-q",
                "extract",
                "--model",
                target,
                "--method",
                method,
                "--n",
                "5",
                "--seed",
                "2",
                *extra,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    fp = load_fingerprint(out)
    assert fp.metadata["method"] == method and len(fp) == 5
    capsys.readouterr()
    assert main(["-q", "verify", "--fingerprint", str(out), "--suspect", target, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["matching_rate"] == 1.0


def test_internal_bugs_are_not_reported_as_user_mistakes(monkeypatch, capsys, tmp_path):
    """A user mistake (an IPGuardError, e.g. a ParameterError) is exit 2; anything else is a bug: exit 1, said as
    such in one line, and --debug shows its traceback."""
    import ipguard_tf.cli as cli

    def bug(args):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(cli.verify, "run", bug)
    argv = ["verify", "--fingerprint", str(tmp_path / "f.npz"), "--suspect", "s"]
    assert main(["-q"] + argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error" in err[0] and "ValueError" in err[0] and "--debug" in err[0]
    with pytest.raises(ValueError, match="broadcast"):
        main(["-q", "--debug"] + argv)

    from ipguard_tf.core.errors import ParameterError

    def mistake(args):
        raise ParameterError("threshold must lie in [0, 1], got 3")

    monkeypatch.setattr(cli.verify, "run", mistake)
    assert main(["-q"] + argv) == 2
    _one_line_error(capsys, 2, "threshold must lie in [0, 1]")


def test_flag_of_another_method_is_refused(model_files, tmp_path, capsys):
    code = main(
        [
            "-q",
            "extract",
            "--model",
            str(model_files / "target.keras"),
            "--method",
            "fgsm",
            "--max-iter",
            "5",
            "--n",
            "2",
            "--out",
            str(tmp_path / "f.npz"),
        ]
    )
    _one_line_error(capsys, code, "--max-iter does not apply to --method fgsm")


def test_out_is_checked_before_any_work(tmp_path, capsys):
    """--out naming a folder is refused first, in one line (it used to fail after the whole search, naming a
    temporary checkpoint path): here before the model, which does not exist, is even looked at."""
    code = main(["-q", "extract", "--model", str(tmp_path / "absent.keras"), "--out", str(tmp_path)])
    _one_line_error(capsys, code, "is a folder")
    code = main(["-q", "verify", "--fingerprint", str(tmp_path / "f.npz"), "--suspect", "s", "--report", str(tmp_path)])
    _one_line_error(capsys, code, "--report")


@needs_fmnist
def test_missing_out_folder_is_created_with_a_notice(model_files, tmp_path, capsys):
    out = tmp_path / "new" / "sub" / "fp.npz"
    code = main(
        [
            "-q",
            "extract",
            "--model",
            str(model_files / "target.keras"),
            "--n",
            "2",
            "--max-iter",
            "5",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and out.exists()
    assert f"creating the folder {out.parent}" in capsys.readouterr().err


def test_n_beyond_memory_is_a_user_error_with_the_estimate(model_files, tmp_path, capsys):
    """Issue 34: an --n whose points cannot fit in memory is refused before any allocation, with the estimate."""
    out = str(tmp_path / "fp.npz")
    code = main(["-q", "extract", "--model", str(model_files / "target.keras"), "--init", "R", "--n", str(10**13)]
                + ["--out", out])  # fmt: skip
    _one_line_error(capsys, code, "GiB is available")


def test_memory_error_is_a_user_error(monkeypatch, model_files, tmp_path, capsys):
    from ipguard_tf.methods import base

    def boom(*a, **k):
        raise MemoryError("Unable to allocate 1.2 TiB")

    monkeypatch.setattr(base.FingerprintMethod, "initial_points", boom)
    argv = ["-q", "extract", "--model", str(model_files / "target.keras"), "--init", "R", "--n", "3"]
    _one_line_error(capsys, main([*argv, "--out", str(tmp_path / "fp.npz")]), "out of memory (Unable to allocate")
