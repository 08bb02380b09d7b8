"""Zoo builds and sweeps on a Ray cluster that is already running, joined by its address (``ipguard zoo build
--ray HOST:PORT``, ``experiments/reproduce.py --ray HOST:PORT``): a head node started with ``ray start --head`` in a
process of its own (its own temp dir, its own ports), and drivers in processes of their own that join it by
address, as a user's would.

Ray (2.60 here) enables token authentication on ``ray start --head`` whenever a token exists (``~/.ray/auth_token``,
written by the first local ``ray.init()``), but a driver given an explicit address never enables it by itself: it
joins without a token and fails with "Failed to connect to Ray cluster at HOST:PORT". A driver joins with the
cluster's token and ``RAY_AUTH_MODE=token`` in its environment (``RAY_AUTH_TOKEN_PATH`` or ``RAY_AUTH_TOKEN``
where the token is not in ``~/.ray/auth_token``); the head here has a token of its own, given the same way. Ray
reads these variables once per process, so every driver here is a subprocess.

The data: the toy task of tests/test_zoo.py written as Fashion-MNIST IDX files (``--data-dir``), which the driver
and the workers read; the zoo: test_zoo_ray.py's MICRO profile (the target and the 6 members made from it) and a random
forest."""

import gzip
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray>=2.40,<3')")

from conftest import toy_zoo_dataset  # noqa: E402
from test_zoo_ray import MICRO, RECIPE_KEYS, _records  # noqa: E402

from ipguard_tf.zoo.builder import ZooBuilder  # noqa: E402

#: MICRO and a random forest (a negative: the sweep's matching rates need one): 8 members
PROFILE = replace(MICRO, name="ray_cluster", forests=1)

ROOT = Path(__file__).resolve().parents[1]
#: the sweep's points: random points and a one-step FGSM, bit-identical on Ray and serially (test_zoo_ray.py)
POINTS = [("random", "RR", None, 0), ("fgsm", "TR", 0.1, 0)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list:
    """The processes below ``pid`` (Ray's workers leave its process group, not its process tree)."""
    children: dict = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def cluster():
    """A Ray head node of 2 CPUs (``ray start --head --block`` in a new session) with token authentication and a
    token of its own; yields its address and the environment a driver joins it with. Teardown ends exactly that
    process and the processes below it (not ``ray stop``, which stops every Ray on the machine)."""
    tmp = Path(tempfile.mkdtemp(prefix="rayhead_", dir="/tmp"))  # short: Ray's socket paths live under it
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0")
    port = free_port()
    ports = {
        "port": port,
        "dashboard-port": free_port(),
        "ray-client-server-port": free_port(),
        "node-manager-port": free_port(),
        "object-manager-port": free_port(),
        "metrics-export-port": free_port(),
        "dashboard-agent-listen-port": free_port(),
        "dashboard-agent-grpc-port": free_port(),
        "runtime-env-agent-port": free_port(),
    }
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus=2"]
    cmd += ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp / 'ray'}"]
    cmd += ["--object-store-memory=200000000"] + [f"--{k}={v}" for k, v in ports.items()]
    log = tmp / "head.log"
    with open(log, "w") as fh:
        head = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.time() + 120
        while not (tmp / "ray" / "ray_current_cluster").exists():  # written once the head is up
            if head.poll() is not None or time.time() > deadline:
                pytest.fail(f"ray start --head did not start (rc {head.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"address": f"127.0.0.1:{port}", "env": env, "log": log}
    finally:
        procs = [head.pid] + descendants(head.pid)
        try:
            os.killpg(head.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + 3
        while any(alive(p) for p in procs) and time.time() < deadline:
            time.sleep(0.5)
        for p in procs:
            if alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        head.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def write_idx(path: Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The toy task as the four Fashion-MNIST IDX files."""
    d = tmp_path_factory.mktemp("toy_fmnist")
    ds = toy_zoo_dataset()
    for stem, x, y in (("train", ds.x_train, ds.y_train), ("t10k", ds.x_test, ds.y_test)):
        write_idx(d / f"{stem}-images-idx3-ubyte.gz", np.round(x[..., 0] * 255))
        write_idx(d / f"{stem}-labels-idx1-ubyte.gz", y)
    return d


def start_driver(cluster, script: str, env=None) -> subprocess.Popen:
    """``script`` in a Python process of its own, in the repository root, with ``cluster``'s environment."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT,
        env={**cluster["env"], **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: int = 300) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def start_cli_zoo_build(cluster, out: Path, data_dir: Path, quiet: bool = False, env=None) -> subprocess.Popen:
    """``ipguard zoo build --dataset fashion_mnist --profile quick --data-dir DATA --ray 127.0.0.1:PORT`` with
    PROFILE as ``quick``."""
    argv = ["zoo", "build", "--dataset", "fashion_mnist", "--profile", "quick", "--out", str(out)]
    argv += ["--data-dir", str(data_dir), "--ray", cluster["address"]]
    script = f"""
        import sys
        from ipguard_tf.zoo.builder import PROFILES, Profile
        PROFILES["quick"] = Profile(**{asdict(PROFILE)!r})
        from ipguard_tf.cli import main
        sys.exit(main({(["-q"] if quiet else []) + argv!r}))
        """
    return start_driver(cluster, script, env=env)


@pytest.fixture(scope="module")
def zoos(cluster, data_dir, tmp_path_factory):
    """PROFILE built through the command line on the cluster and, meanwhile, serially in this process: the
    cluster's zoo folder, its manifest and the CLI's output, and the serial build's manifest."""
    out, serial_out = tmp_path_factory.mktemp("cluster") / "zoo", tmp_path_factory.mktemp("serial") / "zoo"
    proc = start_cli_zoo_build(cluster, out, data_dir)
    try:
        serial = ZooBuilder("fashion_mnist", serial_out, PROFILE, data_dir=str(data_dir), verbose=0).build()
    finally:
        r = finish(proc)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return out, json.loads((out / "manifest.json").read_text()), r.stdout, serial


def test_a_driver_without_the_token_is_refused_in_one_line(cluster, data_dir, tmp_path):
    """The failure the recipe above avoids: the CLI without ``RAY_AUTH_MODE=token`` (here with Ray's GCS
    connection window cut to 2 s) gets "Failed to connect to Ray cluster" as one error line, exit status 2, and
    makes nothing."""
    env = {"RAY_AUTH_MODE": "disabled", "RAY_gcs_server_port_wait_time_s": "2"}
    r = finish(start_cli_zoo_build(cluster, tmp_path / "zoo", data_dir, quiet=True, env=env))
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and last.startswith("ipguard: error: Failed to connect to Ray cluster at "), r.stderr
    assert "RAY_AUTH_MODE=token" in last  # says what a token-authenticated cluster needs
    assert not list(tmp_path.glob("zoo/*.keras"))


def test_cli_zoo_build_on_a_cluster_at_an_address(zoos):
    """``ipguard zoo build --ray 127.0.0.1:PORT`` joins the running head (a driver given an address never starts a
    Ray of its own) and builds the zoo a serial build makes: a complete manifest with the same members in the same
    order, made the same way, accuracies within 0.05 (TensorFlow on one thread in a worker, on all here), every
    member reported as made on Ray, every file present with its recorded SHA-256."""
    out, manifest, stdout, serial = zoos
    assert manifest["complete"] and len(manifest["models"]) == 8
    assert [r["name"] for r in manifest["models"]] == [r["name"] for r in serial["models"]]
    assert manifest.get("rejected", []) == serial.get("rejected", [])
    a, b = _records(serial), _records(manifest)
    for name, rec in a.items():
        for key in RECIPE_KEYS:
            assert b[name].get(key) == rec.get(key), (name, key)
        assert abs(b[name]["test_accuracy"] - rec["test_accuracy"]) <= 0.05, name
    assert b["rf_seed01"]["content_sha256"] == a["rf_seed01"]["content_sha256"]  # scikit-learn: bit-identical
    from ipguard_tf.zoo.store import file_sha256

    for rec in manifest["models"]:
        assert file_sha256(out / rec["file"]) == rec["sha256"], rec["name"]
    made = [line for line in stdout.splitlines() if " s on " in line]
    assert sorted(line.split(": ")[1].split(" (")[0] for line in made) == sorted(a), stdout
    assert stdout.strip().splitlines()[-1] == f"zoo {out}: 8 models (0 pruning levels rejected)"


def test_a_sweep_on_a_cluster_at_an_address(cluster, zoos, data_dir, tmp_path):
    """``run_on_ray(..., RayOptions(address=HOST:PORT))`` as ``experiments/reproduce.py --ray HOST:PORT`` calls it:
    one task per point on the cluster, each cached in the sweep's folder; a serial sweep here computes the same
    rates (random points and a one-step FGSM are bit-identical) and finds every point cached in that folder."""
    from ipguard_tf.evaluation.sweep import Sweep, load_zoo_suspects, run_key
    from ipguard_tf.io.data import load_dataset
    from ipguard_tf.zoo.members import load_member

    zoo = zoos[0]
    script = f"""
        import json
        from ipguard_tf.evaluation.parallel import run_on_ray
        from ipguard_tf.evaluation.sweep import Sweep, load_zoo_suspects
        from ipguard_tf.io.data import load_dataset
        from ipguard_tf.zoo.members import load_member
        from ipguard_tf.zoo.parallel import RayOptions
        ds = load_dataset("fashion_mnist", {str(data_dir)!r})
        zoo = {str(zoo)!r}
        sweep = Sweep({str(tmp_path / "ray")!r}, load_member(zoo, "target"), ds.x_train, load_zoo_suspects(zoo),
                      n=8, progress=False, train_y=ds.y_train)
        got = run_on_ray(sweep, zoo, {POINTS!r}, RayOptions(address={cluster["address"]!r}), data_dir={str(data_dir)!r})
        print(json.dumps({{k: v["rates"] for k, v in got.items()}}))
        """
    r = finish(start_driver(cluster, script))
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(got) == {run_key(*p) for p in POINTS}
    ds = load_dataset("fashion_mnist", str(data_dir))
    target, suspects = load_member(zoo, "target"), load_zoo_suspects(zoo)

    def sweep(name):
        return Sweep(tmp_path / name, target, ds.x_train, suspects, n=8, progress=False, train_y=ds.y_train)

    serial, on_ray = sweep("serial"), sweep("ray")
    for p in POINTS:
        assert on_ray.is_cached(*p), p
        a, b = serial.run(*p), on_ray.run(*p)
        assert a["rates"] == b["rates"] == got[run_key(*p)] and a["n_converged"] == b["n_converged"], p
