import json
import zipfile

import numpy as np
import pytest

from ipguard_tf import IPGuard, load_fingerprint, save_fingerprint
from ipguard_tf.core.errors import FingerprintFileError
from ipguard_tf.core.fingerprint import POINT_FIELDS, SCHEMA


@pytest.fixture(scope="module")
def fp(tiny_model, tiny_data):
    return IPGuard(k=0.5, learning_rate=0.01, max_iter=50, seed=1).generate(tiny_model, 6, tiny_data, dataset="toy")


def test_round_trip(fp, tmp_path):
    p = tmp_path / "fp.npz"
    digest = save_fingerprint(fp, p)
    assert len(digest) == 64
    back = load_fingerprint(p)
    for k in POINT_FIELDS:
        assert np.array_equal(getattr(back, k), getattr(fp, k), equal_nan=True), k
    assert back.metadata["schema"] == SCHEMA
    assert back.metadata["params"] == fp.metadata["params"]
    assert back.metadata["dataset"] == "toy"
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"


def _rewrite(src, dst, mutate):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    mutate(arrays)
    np.savez(dst, **arrays)


def test_altered_point_detected(fp, tmp_path):
    p = tmp_path / "fp.npz"
    save_fingerprint(fp, p)

    def flip_label(a):
        a["y"] = a["y"].copy()
        a["y"][0] = (a["y"][0] + 1) % 4

    _rewrite(p, tmp_path / "bad.npz", flip_label)
    with pytest.raises(FingerprintFileError, match="SHA-256"):
        load_fingerprint(tmp_path / "bad.npz")


def test_altered_metadata_detected(fp, tmp_path):
    p = tmp_path / "fp.npz"
    save_fingerprint(fp, p)

    def change_k(a):
        meta = json.loads(a["metadata"].tobytes())
        meta["params"]["k"] = 99
        a["metadata"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)

    _rewrite(p, tmp_path / "bad.npz", change_k)
    with pytest.raises(FingerprintFileError, match="SHA-256"):
        load_fingerprint(tmp_path / "bad.npz")


def test_wrong_schema(fp, tmp_path):
    p = tmp_path / "fp.npz"
    fp2 = fp.subset(np.ones(len(fp), bool))
    save_fingerprint(fp2, p)

    def schema2(a):
        meta = json.loads(a["metadata"].tobytes())
        meta["schema"] = "ipguard_tf.fingerprint/999"
        a["metadata"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    _rewrite(p, tmp_path / "bad.npz", schema2)
    with pytest.raises(FingerprintFileError, match="schema"):
        load_fingerprint(tmp_path / "bad.npz")


def test_truncated(fp, tmp_path):
    p = tmp_path / "fp.npz"
    save_fingerprint(fp, p)
    data = p.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(FingerprintFileError, match="truncated"):
        load_fingerprint(tmp_path / "cut.npz")


def test_not_a_fingerprint(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"hello")
    with pytest.raises(FingerprintFileError):
        load_fingerprint(tmp_path / "x.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(FingerprintFileError, match="not an ipguard_tf fingerprint"):
        load_fingerprint(tmp_path / "other.npz")
    with pytest.raises(FingerprintFileError, match="does not exist"):
        load_fingerprint(tmp_path / "missing.npz")


def test_pickled_object_array_rejected(tmp_path):
    # a file smuggling an object array must not be unpickled
    arr = np.array([{"a": 1}], dtype=object)
    np.savez(
        tmp_path / "evil.npz",
        x=arr,
        y=arr,
        source=arr,
        target=arr,
        iterations=arr,
        objective=arr,
        converged=arr,
        distortion=arr,
        metadata=arr,
        sha256=arr,
    )
    with pytest.raises(FingerprintFileError):
        load_fingerprint(tmp_path / "evil.npz")


def test_atomic_write_keeps_old_file_on_failure(fp, tmp_path, monkeypatch):
    p = tmp_path / "fp.npz"
    save_fingerprint(fp, p)
    before = p.read_bytes()
    import ipguard_tf.io.files as io_utils

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(io_utils.os, "replace", boom)
    with pytest.raises(OSError):
        save_fingerprint(fp, p)
    assert p.read_bytes() == before
    assert not list(tmp_path.glob(".*tmp"))
    assert zipfile.is_zipfile(p)


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("input_scale", float("nan"), "input_scale must be a finite number > 0"),
        ("input_scale", "abc", "input_scale must be a finite number > 0"),
        ("input_scale", 0, "input_scale must be a finite number > 0"),
        ("epsilon", -0.1, "epsilon must be a finite number > 0"),
        ("output_size", 2.5, "output_size must be an integer >= 1"),
        ("outputs_kind", "softmax", "outputs_kind must be one of logits, probabilities"),
        ("input_range", [1, 0], "input_range must be two finite numbers"),
        ("statistic", 3, "statistic must be a string"),
    ],
)
def test_metadata_a_verification_computes_with_is_checked(fp, tmp_path, capsys, key, value, says):
    """A file written through the public API with a metadata value out of type or range (issue 34: input_scale NaN
    gave the target 0.0 against its own fingerprint, "abc" an internal error) is refused when read, in one line,
    and by the command line with exit status 2."""
    from dataclasses import replace

    from ipguard_tf.cli import main

    bad = tmp_path / "bad.npz"
    save_fingerprint(replace(fp, metadata=dict(fp.metadata, **{key: value}), sha256=None), bad)
    with pytest.raises(FingerprintFileError, match=says):
        load_fingerprint(bad)
    assert main(["-q", "verify", "--fingerprint", str(bad), "--suspect", "x.keras"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_input_scale_given_in_python_is_checked(fp, tiny_model):
    from ipguard_tf import verify_suspects
    from ipguard_tf.core.errors import ParameterError

    with pytest.raises(ParameterError, match="input_scale"):
        verify_suspects(fp, [tiny_model], input_scale=float("nan"))


def test_written_files_get_the_users_umask(fp, tmp_path):
    """Files are written through a private temporary file, but end with the permissions the user's umask gives
    (they were 0600)."""
    import os

    old = os.umask(0o022)
    try:
        save_fingerprint(fp, tmp_path / "f.npz")
        os.umask(0o077)
        save_fingerprint(fp, tmp_path / "g.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "f.npz").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "g.npz").stat().st_mode & 0o777 == 0o600
