"""Fuzzing (hypothesis, derandomised so CI sees the same cases): malformed input thrown at the fingerprint
loader (100 cases), the command line (70) and the remote client (110). Every case must end in a clear one-line
error (exit status 2 for the CLI), never a traceback, an internal error or a wrong result."""

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from conftest import CLASSES, SHAPE, make_tiny_keras3  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ipguard_tf.core.errors import FingerprintFileError  # noqa: E402
from ipguard_tf.core.fingerprint import Fingerprint  # noqa: E402
from ipguard_tf.io.fingerprint_file import load_fingerprint, save_fingerprint  # noqa: E402
from ipguard_tf.methods import IPGuard  # noqa: E402
from ipguard_tf.models.remote import RemoteError, RemoteSuspect  # noqa: E402

FUZZ = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A valid fingerprint (bytes and object), a matching suspect model and mismatching ones, on disk."""
    d = tmp_path_factory.mktemp("fuzz")
    x = np.random.default_rng(0).random((64,) + SHAPE, dtype=np.float32)
    fp = IPGuard(max_iter=20, seed=1).generate(make_tiny_keras3(0), 12, x)
    save_fingerprint(fp, d / "fp.npz")
    make_tiny_keras3(1).save(d / "suspect.keras")
    import keras

    wrong_classes = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(CLASSES + 1)])
    wrong_classes.save(d / "five_classes.keras")
    wrong_size = keras.Sequential([keras.Input((9, 9, 1)), keras.layers.Flatten(), keras.layers.Dense(CLASSES)])
    wrong_size.save(d / "nine_by_nine.keras")
    (d / "empty.keras").write_bytes(b"")
    return d, (d / "fp.npz").read_bytes(), fp


# ---------------------------------------------------------------------------------------------- the loader
def _npz(arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@st.composite
def corrupted(draw, good: bytes):
    kind = draw(st.sampled_from(["truncate", "flip", "random", "arrays"]))
    if kind == "truncate":
        return good[: draw(st.integers(0, len(good) - 1))]
    if kind == "flip":
        b = bytearray(good)
        for pos in draw(st.lists(st.integers(0, len(b) * 8 - 1), min_size=1, max_size=8)):
            b[pos // 8] ^= 1 << (pos % 8)
        return bytes(b)
    if kind == "random":
        return draw(st.binary(min_size=0, max_size=300))
    # a well-formed npz with wrong content: missing fields, wrong dtypes/shapes, NaN/Inf, empty sets
    n = draw(st.integers(0, 4))
    x = np.full((n,) + SHAPE, draw(st.sampled_from([0.5, np.nan, np.inf, -1.0, 2.0])), np.float32)
    arrays = {
        "x": x,
        "y": np.zeros(n, draw(st.sampled_from([np.int64, np.float32]))),
        "metadata": np.frombuffer(draw(st.sampled_from([b"{}", b"not json", b'{"schema": 1}'])), np.uint8),
        "sha256": np.frombuffer(b"0" * 64, np.uint8),
    }
    for k in draw(st.lists(st.sampled_from(sorted(arrays)), max_size=2)):
        arrays.pop(k, None)
    return _npz(arrays)


@settings(max_examples=100, **FUZZ)
@given(data=st.data())
def test_fingerprint_loader_fuzz(files, data, tmp_path_factory):
    d, good, fp = files
    bad = data.draw(corrupted(good))
    path = d / "case.npz"
    path.write_bytes(bad)
    try:
        back = load_fingerprint(path)
    except FingerprintFileError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    # a flip in bytes that carry no content (zip timestamps, padding) may leave the file valid: then it must
    # read back exactly the original fingerprint, never a different one
    for k in ("x", "y", "source", "target", "converged"):
        np.testing.assert_array_equal(getattr(back, k), getattr(fp, k))


def test_crafted_fingerprints_with_valid_checksums_are_checked(files):
    d, _, fp = files
    cases = {
        "NaN": dict(x=np.where(np.arange(fp.x.size).reshape(fp.x.shape) == 0, np.nan, fp.x)),
        "outside": dict(x=fp.x + 2.0),
        "labels": dict(y=fp.y + CLASSES),
    }
    for what, change in cases.items():
        arrays = {**fp.arrays(), **change}
        save_fingerprint(Fingerprint(**arrays, metadata=dict(fp.metadata)), d / f"{what}.npz")
        with pytest.raises(FingerprintFileError, match="NaN|outside"):
            load_fingerprint(d / f"{what}.npz")
    empty = Fingerprint(**{k: v[:0] for k, v in fp.arrays().items()}, metadata=dict(fp.metadata))
    save_fingerprint(empty, d / "empty.npz")
    with pytest.raises(FingerprintFileError, match="no points"):
        load_fingerprint(d / "empty.npz")


# ---------------------------------------------------------------------------------------------------- the CLI
BAD_NUMBERS = ["-1", "0", "abc", "", "nan", "inf", "-inf", "1e999", "0x10", "1.5.2", " ", "NaN", "-0.5", "2"]


@st.composite
def bad_argv(draw, d):
    fp = str(d / "fp.npz")
    kind = draw(st.sampled_from(["extract_num", "verify_num", "files", "suspects", "url", "missing"]))
    if kind == "extract_num":
        opt = draw(
            st.sampled_from(
                [
                    "--n",
                    "--k",
                    "--epsilon",
                    "--alpha",
                    "--max-iter",
                    "--seed",
                    "--lr",
                    "--batch-size",
                    "--cw-steps",
                    "--input-scale",
                    "--checkpoint-every",
                ]
            )
        )
        val = draw(st.sampled_from(BAD_NUMBERS + ["-3", "1.5"]))
        ok_for = {
            "--k": {"0", "2", "1.5"},
            "--seed": {"0", "2"},
            "--max-iter": {"0", "2"},
            "--epsilon": {"0"},
            "--n": {"2"},
            "--batch-size": {"2"},
            "--cw-steps": {"2"},
            "--lr": {"2", "1.5"},
            "--input-scale": {"2", "1.5"},
            "--checkpoint-every": {"0", "2", "1.5"},
        }
        if val in ok_for.get(opt, set()):
            val = "abc"
        return ["extract", "--model", str(d / "suspect.keras"), "--init", "R", "--out", str(d / "o.npz"), opt, val]
    if kind == "verify_num":
        opt = draw(
            st.sampled_from(
                [
                    "--threshold",
                    "--batch-size",
                    "--timeout",
                    "--retries",
                    "--max-rps",
                    "--query-budget",
                    "--input-scale",
                ]
            )
        )
        val = draw(st.sampled_from(BAD_NUMBERS))
        if opt in ("--threshold",) and val in ("0",):
            val = "1.5"
        if opt in ("--retries", "--query-budget") and val in ("0", "2"):
            val = "-2"
        if opt in ("--batch-size", "--timeout", "--max-rps", "--input-scale") and val in ("2",):
            val = "0"
        return ["verify", "--fingerprint", fp, "--suspect", str(d / "suspect.keras"), opt, val]
    if kind == "files":
        name = draw(st.sampled_from(["case.npz", "nothing.npz", "suspect.keras", ".", "empty.keras"]))
        return ["verify", "--fingerprint", str(d / name), "--suspect", str(d / "suspect.keras")]
    if kind == "suspects":
        name = draw(
            st.sampled_from(
                ["five_classes.keras", "nine_by_nine.keras", "empty.keras", "nothing.h5", "fp.npz", "model.onnx"]
            )
        )
        return ["verify", "--fingerprint", fp, "--suspect", str(d / name)]
    if kind == "url":
        url = draw(
            st.sampled_from(
                [
                    "ftp://x/v1/models/m",
                    "http://",
                    "localhost:1/v1/models/m",
                    "http://127.0.0.1:1/other/path",
                    "http://127.0.0.1:1/v1/models/m",
                    "http://[::1/v2/models/m",
                ]
            )
        )
        return ["verify", "--fingerprint", fp, "--suspect-url", url, "--retries", "0", "--timeout", "0.5"]
    return draw(
        st.sampled_from(
            [
                ["verify", "--fingerprint", fp],
                ["extract", "--model", str(d / "suspect.keras")],
                ["nosuchcommand"],
                [],
                ["zoo"],
                ["zoo", "list", str(d / "nothing")],
                ["verify", "--suspect", "x"],
                ["extract", "--out", "x", "--model"],
            ]
        )
    )


@settings(max_examples=70, **FUZZ)
@given(data=st.data())
def test_cli_fuzz(files, data, capsys):
    from ipguard_tf.cli import main

    d, good, _ = files
    (d / "case.npz").write_bytes(data.draw(corrupted(good)))
    argv = data.draw(bad_argv(d))
    if str(d / "case.npz") in argv:
        try:
            load_fingerprint(d / "case.npz")
            hypothesis.assume(False)  # the corruption left the file intact (see the loader fuzz)
        except FingerprintFileError:
            pass
    try:
        rc = main(["-q"] + argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, (argv, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, (argv, err)


# --------------------------------------------------------------------------------------- the remote client
class _Stub:
    """An HTTP server on loopback answering every POST with the next canned (status, body)."""

    def __init__(self):
        self.reply = (200, b"{}")
        stub = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, body = stub.reply
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def stub():
    s = _Stub()
    yield s
    s.server.shutdown()


N_POINTS = 3
LABELS = [2, 0, 3]


def _valid(protocol, output):
    if output == "labels":
        rows = LABELS
    else:
        rows = [[0.1] * CLASSES for _ in LABELS]
        for r, lab in zip(rows, LABELS):
            r[lab] = 0.7
    if protocol == "tfserving":
        return {"predictions": rows}
    shape = [N_POINTS] if output == "labels" else [N_POINTS, CLASSES]
    return {
        "outputs": [
            {"name": "o", "shape": shape, "datatype": "FP32", "data": rows if output == "labels" else sum(rows, [])}
        ]
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10) | st.floats(allow_nan=True) | st.text(max_size=3),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=12,
)


@st.composite
def bad_reply(draw, protocol, output):
    good = _valid(protocol, output)
    key = "predictions" if protocol == "tfserving" else "outputs"
    kind = draw(st.sampled_from(["count", "label", "row", "nan", "keys", "bytes", "shape", "json", "status"]))
    if kind == "bytes":
        return 200, draw(
            st.binary(min_size=1, max_size=40).filter(lambda b: not b.strip().startswith((b"{", b"[")))
        ) or b"x"
    if kind == "status":
        return draw(st.sampled_from([400, 401, 403, 404, 413, 422])), json.dumps({"error": "no"}).encode()
    if kind == "json":
        v = draw(json_values)
        return 200, json.dumps(
            {"predictions" if protocol == "v2" else "outputs": v} if draw(st.booleans()) else v
        ).encode()
    if kind == "keys":
        good = {draw(st.sampled_from(["prediction", "output", "error", "results"])): good[key]}
        return 200, json.dumps(good).encode()
    rows = _valid("tfserving", output)["predictions"]
    if kind == "count":
        rows = rows[: draw(st.integers(0, N_POINTS - 1))] if draw(st.booleans()) else rows + rows[:1]
    elif kind == "label":
        bad = draw(st.sampled_from([-1, CLASSES, 99, 1.5, "1", None, True, [], {"a": "1"}]))
        i = draw(st.integers(0, N_POINTS - 1))
        rows = [bad if j == i else (r if output == "labels" else r) for j, r in enumerate(rows)]
        if output != "labels" and isinstance(bad, (int, float)) and not isinstance(bad, bool):
            rows[i] = [bad] * (CLASSES + 1)  # a score row of the wrong length
    elif kind == "row":
        rows = [[0.5] * draw(st.sampled_from([0, 2, CLASSES - 1, CLASSES + 1])) for _ in rows]
    elif kind == "nan":
        rows = [[float(draw(st.sampled_from(["nan", "inf", "-inf"])))] + [0.1] * (CLASSES - 1) for _ in rows]
    elif kind == "shape":
        if protocol == "tfserving":
            rows = {"a": rows, "b": rows}
        else:
            out = _valid("v2", output)["outputs"][0]
            out["shape"] = draw(st.sampled_from([[N_POINTS + 1], [N_POINTS, CLASSES, 1], [], [-3], "3", [N_POINTS, 2]]))
            return 200, json.dumps({"outputs": [out]}).encode()
    if protocol == "tfserving":
        return 200, json.dumps({"predictions": rows}, allow_nan=True).encode()
    flat = []
    for r in rows if isinstance(rows, list) else []:
        flat += r if isinstance(r, list) else [r]
    shape = (
        [len(rows)] if output == "labels" or not rows or not isinstance(rows[0], list) else [len(rows), len(rows[0])]
    )
    return 200, json.dumps(
        {"outputs": [{"name": "o", "shape": shape, "datatype": "FP32", "data": flat}]}, allow_nan=True
    ).encode()


@settings(max_examples=110, **FUZZ)
@given(
    data=st.data(),
    protocol=st.sampled_from(["tfserving", "v2"]),
    output=st.sampled_from(["labels", "probabilities", "auto"]),
)
def test_remote_client_fuzz(stub, data, protocol, output):
    expect_kind = (
        "labels"
        if output == "labels"
        else ("probabilities" if output == "probabilities" else data.draw(st.sampled_from(["labels", "probabilities"])))
    )
    path = "/v1/models/m" if protocol == "tfserving" else "/v2/models/m"
    s = RemoteSuspect(
        f"http://127.0.0.1:{stub.port}{path}",
        num_classes=CLASSES,
        input_shape=SHAPE,
        output=output,
        retries=0,
        timeout=5,
    )
    x = np.full((N_POINTS,) + SHAPE, 0.5, np.float32)
    # a valid reply gives exactly its labels ...
    stub.reply = (200, json.dumps(_valid(protocol, expect_kind)).encode())
    assert s.query(x).tolist() == LABELS
    # ... and a malformed one a one-line RemoteError
    stub.reply = data.draw(bad_reply(protocol, expect_kind))
    with pytest.raises(RemoteError) as info:
        s.query(x)
    assert str(info.value) and "\n" not in str(info.value)
    s.close()
