"""Verification through a prediction API, against a real KServe model server on loopback (both protocols),
through a fault-injecting proxy, with budgets and resumption."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_keras3

pytest.importorskip("kserve", reason="kserve (test dependency) is not installed")
requests = pytest.importorskip("requests")

from servers.fault_proxy import FaultProxy  # noqa: E402

from ipguard_tf.io.fingerprint_file import load_fingerprint, save_fingerprint  # noqa: E402
from ipguard_tf.methods import IPGuard  # noqa: E402
from ipguard_tf.models.remote import RemoteError, RemoteSuspect, resolve_endpoint  # noqa: E402
from ipguard_tf.verification.remote import _progress_file, verify_remote  # noqa: E402
from ipguard_tf.verification.suspects import verify  # noqa: E402

SERVERS = Path(__file__).resolve().parent / "servers"
N = 40
SCALE = 255.0  # the served model takes [0, 255] inputs, as deployed image models do


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(fingerprint path, fingerprint, suspect model, server base URL): a KServe server serving the suspect."""
    tmp = tmp_path_factory.mktemp("remote")
    target, suspect = make_tiny_keras3(0), make_tiny_keras3(1, softmax=True)
    suspect_path = tmp / "suspect.keras"
    suspect.save(suspect_path)
    x0 = np.random.default_rng(5).random((200, 8, 8, 1), dtype=np.float32)
    fp = IPGuard(k=0.5, max_iter=200, seed=3).generate(target, N, x0)
    fp.metadata["input_scale"] = SCALE
    fp_path = tmp / "fp.npz"
    save_fingerprint(fp, fp_path)
    port = _free_port()
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(SERVERS / "kserve_keras.py"), str(suspect_path), str(port), "tiny"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            if requests.get(f"{base}/v2/models/tiny/ready", timeout=2).status_code == 200:
                break
        except requests.exceptions.RequestException:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("KServe server did not start: " + (tmp / "server.log").read_text()[-2000:])
        time.sleep(0.5)
    yield fp_path, load_fingerprint(fp_path), suspect, base
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _suspect(url, fp, **kw):
    kw.setdefault("backoff", 0.01)
    return RemoteSuspect(
        url,
        num_classes=fp.metadata["num_classes"],
        input_shape=tuple(fp.metadata["input_shape"]),
        input_scale=fp.metadata["input_scale"],
        **kw,
    )


def test_resolve_endpoint():
    assert resolve_endpoint("http://h:8501/v1/models/m") == ("http://h:8501/v1/models/m:predict", "tfserving", "m")
    assert resolve_endpoint("http://h/v1/models/m/versions/3:predict")[0] == "http://h/v1/models/m/versions/3:predict"
    assert resolve_endpoint("https://h/v2/models/m/infer") == ("https://h/v2/models/m/infer", "v2", "m")
    assert resolve_endpoint("http://h/x/v2/models/m/versions/2")[0] == "http://h/x/v2/models/m/versions/2/infer"
    for bad in ("ftp://h/v1/models/m", "http://h/predict", "h:8501/v1/models/m", "http:///v1/models/m"):
        with pytest.raises(RemoteError):
            resolve_endpoint(bad)
    with pytest.raises(RemoteError, match="does not match"):
        resolve_endpoint("http://h/v1/models/m", "v2")


@pytest.mark.parametrize("protocol", ["tfserving", "v2"])
@pytest.mark.parametrize("output", ["probabilities", "labels"])
def test_remote_equals_local(served, protocol, output):
    fp_path, fp, suspect, base = served
    local = verify(fp, suspect, input_scale=1.0)
    name = "tiny" if output == "probabilities" else "tiny-labels"
    url = f"{base}/{'v1' if protocol == 'tfserving' else 'v2'}/models/{name}"
    s = _suspect(url, fp, output=output, batch_size=16)
    r = verify_remote(fp, s, progress_path=fp_path.with_name(f"p-{protocol}-{output}.json"))
    assert r.n == N and r.matches == local.matches and r.matching_rate == local.matching_rate
    assert 0 < local.matches < N  # a different model: the comparison is not trivially all or nothing
    assert s.requests_sent == 3 and s.retried == 0
    assert not fp_path.with_name(f"p-{protocol}-{output}.json").exists()  # removed when complete


def test_wrong_output_kind_is_an_error(served):
    fp_path, fp, _, base = served
    with pytest.raises(RemoteError, match="row of 4 values where a label"):
        verify_remote(fp, _suspect(f"{base}/v1/models/tiny", fp, output="labels"))
    with pytest.raises(RemoteError, match="row of class scores was expected"):
        verify_remote(fp, _suspect(f"{base}/v2/models/tiny-labels", fp, output="probabilities"))
    with pytest.raises(RemoteError, match="does not exist|HTTP 404"):
        verify_remote(fp, _suspect(f"{base}/v1/models/nosuch", fp))


def test_remote_oracle_answers_like_the_local_model(served):
    """A thief's oracle over the served model (issue 14): probabilities equal the local softmax, queries are
    counted, and a label-only endpoint is refused for probabilities with a reason."""
    from ipguard_tf.models.oracle import Oracle, OracleError, softmax
    from ipguard_tf.zoo.stealing import extract_labels
    from ipguard_tf.zoo.train import SGDRecipe

    fp_path, fp, suspect, base = served
    x = np.random.default_rng(3).random((40, 8, 8, 1), dtype=np.float32)
    s = _suspect(f"{base}/v2/models/tiny", fp, output="probabilities", batch_size=16)
    o = Oracle(s, output="probabilities", batch_size=16)
    np.testing.assert_allclose(o.probabilities(x), softmax(suspect.predict(x, verbose=0)), atol=1e-5)
    assert o.queries == 40 and s.points_sent == 40
    student, info = extract_labels(
        o, x, lambda: make_tiny_keras3(9), recipe=SGDRecipe(0.05, epochs=1, batch_size=16), progress=False
    )
    assert info["queries"] == 40 and s.points_sent == 80
    labels_only = Oracle(_suspect(f"{base}/v1/models/tiny-labels", fp, output="labels"), output="probabilities")
    with pytest.raises(RemoteError, match="answers class labels only"):
        labels_only.probabilities(x[:4])
    with pytest.raises(OracleError, match="labels only"):
        Oracle(s, output="labels").probabilities(x[:4])


def test_remote_sac_verification_equals_the_local_computation(served, tmp_path):
    """SAC-m over a probability API (issue 15): the served probabilities against the target's softmax, as
    computed locally; a label-only endpoint is refused with a reason."""
    from ipguard_tf.core.statistics import sac_distance, softmax
    from ipguard_tf.methods.sac import SACm

    fp_path, fp, suspect, base = served
    target = make_tiny_keras3(0)
    sac = SACm(seed=5).generate(target, 24, np.random.default_rng(8).random((100, 8, 8, 1), dtype=np.float32))
    sac.metadata["input_scale"] = SCALE
    path = tmp_path / "sac.npz"
    save_fingerprint(sac, path)
    sac = load_fingerprint(path)
    s = _suspect(f"{base}/v1/models/tiny", sac, output="probabilities", batch_size=10)
    r = verify_remote(sac, s, progress_path=tmp_path / "sac-progress.json")
    served_probs = softmax(suspect.predict(sac.x, verbose=0))  # the test server's answer (see kserve_keras.py)
    assert r.statistic == "sac_distance" and r.n == 24
    assert r.value == pytest.approx(sac_distance(softmax(sac.outputs), served_probs), abs=1e-6)
    with pytest.raises(RemoteError, match="needs the suspect's class scores"):
        verify_remote(sac, _suspect(f"{base}/v1/models/tiny-labels", sac, output="labels"))
    with pytest.raises(RemoteError, match="answers class labels only"):
        verify_remote(sac, _suspect(f"{base}/v1/models/tiny-labels", sac, output="auto"))


def test_faults_are_retried_and_the_rate_stays_exact(served):
    fp_path, fp, suspect, base = served
    local = verify(fp, suspect, input_scale=1.0)
    proxy = FaultProxy(base, plan=["503", "drop", "delay", "502html", "truncate", "ok", "503"], delay_s=2.0)
    try:
        for protocol in ("v1", "v2"):
            s = _suspect(f"{proxy.url}/{protocol}/models/tiny", fp, batch_size=16, timeout=1.0, retries=5)
            r = verify_remote(fp, s)
            assert r.matches == local.matches
            if protocol == "v1":
                assert s.retried == 6 and s.requests_sent == 9  # 3 batches, 6 faults each retried once
        assert proxy.faults_served == ["503", "drop", "delay", "502html", "truncate", "503"]
    finally:
        proxy.close()


def test_retries_exhausted_is_a_clear_error(served):
    fp_path, fp, _, base = served
    proxy = FaultProxy(base, plan=["503"] * 10)
    try:
        with pytest.raises(RemoteError, match=r"HTTP 503, gave up after 3 attempts"):
            verify_remote(fp, _suspect(f"{proxy.url}/v1/models/tiny", fp, retries=2))
    finally:
        proxy.close()


def test_interrupted_verification_resumes_without_requerying(served, tmp_path):
    fp_path, fp, suspect, base = served
    local = verify(fp, suspect, input_scale=1.0)
    progress = tmp_path / "progress.npz"
    proxy = FaultProxy(base, plan=["ok", "garbage"])
    try:
        url = f"{proxy.url}/v2/models/tiny"
        with pytest.raises(RemoteError, match="not JSON"):
            verify_remote(fp, _suspect(url, fp, batch_size=8), progress_path=progress)
        with np.load(progress, allow_pickle=False) as z:
            saved = z["labels"]
        assert saved.dtype == np.int64 and (saved >= 0).sum() == 8 and proxy.points_forwarded == 8
        # an exhausted query budget stops the run, keeping what was answered
        with pytest.raises(RemoteError, match="query budget of 16 points exhausted"):
            verify_remote(fp, _suspect(url, fp, batch_size=8, query_budget=16), progress_path=progress)
        with np.load(progress, allow_pickle=False) as z:
            assert (z["labels"] >= 0).sum() == 24
        r = verify_remote(fp, _suspect(url, fp, batch_size=8), progress_path=progress)
        assert r.matches == local.matches
        assert proxy.points_forwarded == N  # every point reached the server once
        assert not progress.exists()
        # a progress file of another verification is refused, not reused
        _progress_file(progress, {"other": 1}).save({"labels": np.full(N, -1, np.int64)}, {})
        with pytest.raises(RemoteError, match="belongs to another verification") as err:
            verify_remote(fp, _suspect(url, fp), progress_path=progress)
        assert "\n" not in str(err.value) and "delete it" in str(err.value)
        progress.write_bytes(b"{}")  # a damaged (or old JSON) progress file
        with pytest.raises(RemoteError, match="unreadable.*delete it"):
            verify_remote(fp, _suspect(url, fp), progress_path=progress)
    finally:
        proxy.close()


def test_cli_verify_url(served, capsys):
    from ipguard_tf.cli import main

    fp_path, fp, suspect, base = served
    local = verify(fp, suspect, input_scale=1.0)
    rc = main(
        [
            "-q",
            "verify",
            "--fingerprint",
            str(fp_path),
            "--suspect-url",
            f"{base}/v1/models/tiny-labels",
            "--output",
            "labels",
            "--json",
        ]
    )
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["matches"] == local.matches and rows[0]["n"] == N
    rc = main(
        [
            "-q",
            "verify",
            "--fingerprint",
            str(fp_path),
            "--suspect-url",
            "http://127.0.0.1:1/v1/models/x",
            "--retries",
            "0",
            "--timeout",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("ipguard: error:") and err.count("\n") == 1 and "connection failed" in err
