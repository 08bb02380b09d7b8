"""Resumable extraction (a killed ``ipguard extract`` resumes from its checkpoint and gives the same
fingerprint), checkpoints of another run refused, the resumable-state store they are written with, and NaN/Inf
during optimisation reported per point."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import SHAPE, make_tiny_keras3

from ipguard_tf.core.errors import ParameterError
from ipguard_tf.core.fingerprint import POINT_FIELDS
from ipguard_tf.io import files
from ipguard_tf.io.checkpoint import CheckpointError, StateFile
from ipguard_tf.io.fingerprint_file import load_fingerprint
from ipguard_tf.methods import CWL2, IPGuard
from ipguard_tf.models.classifier import as_classifier


def _extract(model_path, out, *extra):
    return [
        sys.executable,
        "-m",
        "ipguard_tf.cli",
        "extract",
        "--model",
        str(model_path),
        "--init",
        "R",
        "--n",
        "500",
        "--k",
        "30",
        "--seed",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def test_killed_extract_resumes_to_the_same_fingerprint(tmp_path):
    model_path = tmp_path / "target.keras"
    make_tiny_keras3(0).save(model_path)
    env = dict(os.environ, IPGUARD_NO_PROGRESS="1")
    ref = subprocess.run(
        _extract(model_path, tmp_path / "ref.npz", "--no-checkpoint"),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ref.returncode == 0, ref.stderr
    out, ckpt = tmp_path / "fp.npz", tmp_path / "fp.npz.checkpoint.npz"
    proc = subprocess.Popen(
        _extract(model_path, out, "--checkpoint-every", "0"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: as a power cut or an OOM kill would do
    proc.wait()
    assert ckpt.exists() and not out.exists(), "the run was not interrupted mid-search"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left behind"
    res = subprocess.run(
        _extract(model_path, out, "--checkpoint-every", "0"), capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert "resumed at iteration" in res.stderr
    it = int(res.stderr.split("resumed at iteration")[1].split()[0])
    assert 0 < it < 1000
    a, b = load_fingerprint(tmp_path / "ref.npz"), load_fingerprint(out)
    for k in POINT_FIELDS:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert not ckpt.exists()  # removed once the fingerprint is written


def test_checkpoint_restores_finished_searches_and_refuses_other_runs(tmp_path, tiny_model, tiny_data, caplog):
    ckpt = tmp_path / "c.npz"
    kw = dict(max_iter=1, binary_search_steps=3, seed=2)
    a = CWL2(**kw).generate(tiny_model, 12, tiny_data, checkpoint=ckpt, checkpoint_every=0)
    assert ckpt.exists()
    with np.load(ckpt) as z:
        assert len([f for f in z.files if f.endswith("/w")]) == 3  # one entry per binary-search step
    m = CWL2(**kw)
    with caplog.at_level("INFO", logger="ipguard_tf.io.checkpoint"):
        b = m.generate(tiny_model, 12, tiny_data, checkpoint=ckpt)  # everything restored
    assert "resuming from checkpoint" in caplog.text and "(3 search run(s) saved)" in caplog.text
    for k in POINT_FIELDS:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    with pytest.raises(CheckpointError, match="belongs to another run"):
        CWL2(**dict(kw, seed=3)).generate(tiny_model, 12, tiny_data, checkpoint=ckpt)
    ckpt.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        IPGuard(seed=2).generate(tiny_model, 12, tiny_data, checkpoint=ckpt)


def test_state_file_round_trip(tmp_path):
    st = StateFile(tmp_path / "s.npz", {"seed": 1, "shape": (2, 3)}, "test state")
    assert st.load() is None and not st.exists()  # no file yet: nothing to resume
    arrays = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "done": np.array([True, False]),
        "k/labels": np.array([-1, 4], np.int64),
    }
    st.save(arrays, {"step": np.int64(3), "history": [{"loss": 0.5}]})
    again = StateFile(tmp_path / "s.npz", {"shape": [2, 3], "seed": 1}, "test state")  # the same identity
    got, scalars = again.load()
    assert scalars == {"step": 3, "history": [{"loss": 0.5}]} and sorted(got) == sorted(arrays)
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype
        np.testing.assert_array_equal(got[k], a)
    st.remove()
    assert not st.exists()
    st.remove()  # removing twice is fine
    with pytest.raises(ValueError, match="dtype object"):
        st.save({"bad": np.array([{}], dtype=object)}, {})  # would need pickle to read back
    assert not st.exists()


def test_state_file_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "s.npz"
    st = StateFile(path, "run-1")
    st.save({"w": np.zeros(3)}, {"step": 1})

    def crash(*a, **k):  # the process dies after writing the temporary file, before renaming it
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        st.save({"w": np.ones(3)}, {"step": 2})
    monkeypatch.undo()
    arrays, scalars = st.load()  # the previous state, whole
    assert scalars == {"step": 1} and not arrays["w"].any()
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no temporary file left behind


def test_state_file_of_another_run_is_refused_in_one_line(tmp_path):
    path = tmp_path / "s.npz"
    StateFile(path, {"seed": 1}).save({"w": np.zeros(2)}, {})
    with pytest.raises(CheckpointError, match="belongs to another run") as err:
        StateFile(path, {"seed": 2}).load()
    assert "\n" not in str(err.value) and "delete it" in str(err.value)
    # the caller's error class and wording
    other = StateFile(
        path, {"seed": 2}, "training checkpoint", other="another training run", hint="rerun", error=ParameterError
    )
    with pytest.raises(
        ParameterError,
        match=r"^training checkpoint .* belongs to another training run; delete "
        r"it to start afresh, or rerun$",
    ):
        other.load()
    # a file of another kind of state is refused too (as unreadable: it holds something else)
    with pytest.raises(CheckpointError, match="unreadable.*schema"):
        StateFile(path, {"seed": 1}, schema="ipguard_tf.other/1").load()


@pytest.mark.parametrize("content", [b"garbage", b"", b"PK\x03\x04truncated"])
def test_garbage_state_file_is_refused_in_one_line(tmp_path, content):
    path = tmp_path / "s.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is unreadable") as err:
        StateFile(path, "run-1", "checkpoint").load()
    assert "\n" not in str(err.value) and "delete it to start afresh" in str(err.value)
    # an .npz without the index (e.g. written by hand, or by an older version) is unreadable as well
    np.savez(path, w=np.zeros(2))
    with pytest.raises(CheckpointError, match="unreadable"):
        StateFile(path, "run-1").load()


def test_nonfinite_points_are_stopped_and_reported(tiny_model, caplog):
    base = as_classifier(tiny_model)

    def logits(x):  # NaN wherever the first pixel exceeds 0.9 (log of a negative number)
        z = base.logits(x)
        return z + 0.0 * tf.math.log(0.9 - x[:, :1, 0, 0])

    clf = as_classifier(logits, output="logits", input_shape=SHAPE, num_classes=4)
    x0 = np.random.default_rng(0).random((40,) + SHAPE, dtype=np.float32)
    x0[:, 0, 0, 0] = np.where(np.arange(40) % 5 == 0, 0.95, 0.5)
    fp = IPGuard(k=0.5, max_iter=50, init="T").generate(clf, 40, x0)
    bad = fp.metadata["nonfinite_points"]
    assert bad and all(fp.x[i, 0, 0, 0] > 0.9 for i in bad)
    assert not fp.converged[bad].any()
    assert np.all(np.isfinite(fp.x))
    good = np.setdiff1d(np.arange(40), bad)
    assert np.all(fp.iterations[good] > 0) and np.all(fp.distortion[good] > 0)  # the others went on
    assert any("NaN or infinite" in r.message for r in caplog.records)
