"""Zoo builds on Ray (issue 32): ``ipguard zoo build --ray [ADDRESS]``.

The build is the builder's own plan (:meth:`~ipguard_tf.zoo.builder.ZooBuilder.planned`), cut into tasks: one
Ray task per member (the fine-pruning snapshots of one SAC pruning run, which one run makes together, are one
task). A task declares its resources (``num_cpus``, ``num_gpus``) and gets only picklable arguments: the builder's
class and constructor arguments (zoo folder, dataset name, data dir, profile), the names of its members and the
manifest as the driver has it. The worker re-creates the builder (kept for the worker's next task: the data, the
split and the target are loaded once per worker process), makes each member with
:meth:`~ipguard_tf.zoo.builder.ZooBuilder.build_member` exactly as a serial build does, writes its file into the
zoo folder with the same atomic writers, and returns the member's record. No model crosses Ray: a member that reads
another (the target, a SAC student) loads its file.

The driver alone writes ``manifest.json``, after every finished member (records in plan order), so an
interrupted build keeps what finished and a restart makes only the rest (:meth:`ZooBuilder.pending`: members
without a record and file; a file without a record, left by a worker killed between the two writes, is adopted as
in a serial build). A member is submitted only when the members it needs are recorded
(:meth:`ZooBuilder.needs`: the target first, then everything made from it fans out; Extract-Adv after its
student), and the pruning levels of a chain one after another, none after the first rejected (accuracy loss
above 3 %), as a serial build does. Tasks whose worker dies (killed, out of memory, a lost node) are retried
``max_retries`` times; an exception in a member is not retried (a build is deterministic: it would fail again)
but comes back as one line naming the member, after the tasks still running have finished and been recorded.

A file the driver cannot find in the zoo folder with the SHA-256 the worker recorded is an error: on a cluster of
several machines the zoo folder and the data dir must be on a file system every node shares, at the same paths,
and every node needs ``ipguard_tf`` with the same library versions.

Ray is imported only here, inside the functions that need it (:func:`import_ray`): the package imports without it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import tensorflow as tf

from ipguard_tf.zoo.builder import PlannedMember, ZooBuilder
from ipguard_tf.zoo.store import ZooError, build_lock, file_sha256, write_manifest

log = logging.getLogger(__name__)

#: what ``pip install`` needs for a build on Ray (requirements.txt has the same range)
RAY_REQUIREMENT = "ray>=2.40,<3"


@dataclass(frozen=True)
class RayOptions:
    """Where and how a zoo is built on Ray."""

    #: None: a new Ray on this machine, started in this process and stopped at the end; else the address of a
    #: running cluster ("auto", "HOST:PORT", "ray://HOST:10001"). A Ray already started in this process is used.
    address: Optional[str] = None
    #: a new local Ray: the CPUs it may use (None: the machine's)
    num_cpus: Optional[int] = None
    #: resources each member's task declares (TensorFlow in a worker uses as many threads as its CPUs)
    cpus_per_member: float = 1.0
    gpus_per_member: float = 0.0
    #: retries of a task whose worker died (not of a member's exception)
    max_retries: int = 3


def import_ray() -> Any:
    """``ray``, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ZooError(f"building a zoo on Ray needs Ray: pip install '{RAY_REQUIREMENT}'") from None
    return ray


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception as one line: its type and its message's words."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the worker ------------------------------------------------------------------------------------------------------
#: in a worker process: the builder of its last task, with its data, split and target loaded
_WORKER_BUILDERS: Dict[str, ZooBuilder] = {}
_WORKER_THREADS: Dict[str, int] = {}


def limit_threads(cpus: float) -> None:
    """TensorFlow in a worker: as many threads as its task's CPUs (possible before its first op only)."""
    n = max(1, int(round(cpus)))
    if _WORKER_THREADS.get("intra") is None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
        except RuntimeError:  # TensorFlow already running in this process
            pass
        _WORKER_THREADS["intra"] = n


def _worker_builder(cls: type, kwargs: Dict[str, Any], dataset: Optional[list], manifest: Dict[str, Any]) -> ZooBuilder:
    target = next((r for r in manifest.get("models", []) if r["name"] == "target"), {})
    key = repr((cls.__module__, cls.__qualname__, sorted(kwargs.items()), dataset, target.get("content_sha256")))
    builder = _WORKER_BUILDERS.get(key)
    if builder is None:
        import ray

        _WORKER_BUILDERS.clear()
        builder = cls(**kwargs, dataset=ray.get(dataset[0]) if dataset else None)
        builder.worker = True
        _WORKER_BUILDERS[key] = builder
    builder.manifest = copy.deepcopy(manifest)
    builder._data()
    return builder


def make_members(
    cls: type,
    kwargs: Dict[str, Any],
    dataset: Optional[list],
    names: List[str],
    manifest: Dict[str, Any],
    cpus: float = 1.0,
) -> Dict[str, Any]:
    """One task: make members ``names`` (in order) of the zoo ``cls(**kwargs)`` whose manifest is ``manifest``;
    return per member its record (or its rejection, or its error as one line), with the task's timings.
    ``dataset``: None (the worker loads it) or ``[ObjectRef]`` of a dataset given in memory."""
    started = time.time()
    out: Dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "members": []}
    try:
        limit_threads(cpus)
        builder = _worker_builder(cls, kwargs, dataset, manifest)
    except Exception as exc:
        out["members"].append({"name": names[0], "error": one_line(exc), "traceback": traceback.format_exc()})
        out["ended"] = time.time()
        return out
    out["setup_seconds"] = time.time() - started
    for name in names:
        t0 = time.time()
        try:
            builder.build_member(name)
        except Exception as exc:
            out["members"].append({"name": name, "error": one_line(exc), "traceback": traceback.format_exc()})
            break
        out["members"].append(
            {
                "name": name,
                "record": builder.record(name),
                "rejected": builder._rejected(name),
                "seconds": time.time() - t0,
            }
        )
    getattr(builder, "_runs", {}).clear()  # a SAC fine-pruning run: its snapshots are stored
    out["ended"] = time.time()
    return out


# -- the driver ------------------------------------------------------------------------------------------------------
@dataclass
class _Task:
    """Members made by one task: one member, or the snapshots of one fine-pruning run."""

    members: List[PlannedMember]
    chain: Optional[str] = None

    @property
    def names(self) -> List[str]:
        return [m.name for m in self.members]

    @property
    def needs(self) -> set:
        return {n for m in self.members for n in m.needs} - set(self.names)


def tasks_of(pending: List[PlannedMember]) -> List[_Task]:
    """``pending`` cut into tasks, in plan order: the members of one run together, every other member alone."""
    tasks: List[_Task] = []
    runs: Dict[str, _Task] = {}
    for m in pending:
        if m.run is not None and m.run in runs:
            runs[m.run].members.append(m)
            continue
        task = _Task([m], m.chain)
        if m.run is not None:
            runs[m.run] = task
        tasks.append(task)
    return tasks


def _spec(builder: ZooBuilder) -> Tuple[type, Dict[str, Any]]:
    """The builder's class and the constructor arguments a worker re-creates it from (no data, no models)."""
    kwargs = {
        f.name: getattr(builder, f.name)
        for f in dataclasses.fields(builder)
        if f.init and not f.name.startswith("_") and f.name not in ("dataset", "manifest", "worker")
    }
    kwargs["out"] = str(Path(builder.out).resolve())
    for key in ("data_dir", "weights"):  # folders given relative to this process's folder (weights: ImageNet's)
        if kwargs.get(key) and Path(kwargs[key]).expanduser().exists():
            kwargs[key] = str(Path(kwargs[key]).expanduser().resolve())
    kwargs["verbose"] = 0  # the driver prints one line per member
    return type(builder), kwargs


def connect(ray: Any, options: RayOptions) -> bool:
    """Start or join Ray as ``options`` say; True when this call started it (and the build stops it)."""
    if ray.is_initialized():
        return False
    common = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    if options.address:
        if options.num_cpus is not None:
            raise ZooError("--ray-cpus is for a local Ray; a cluster at an address has the CPUs it has")
        try:
            ray.init(address=options.address, **common)
        except ConnectionError as exc:  # Ray's own message names the address only
            raise ZooError(
                f"{exc}; a cluster started with token authentication also needs RAY_AUTH_MODE=token and its token "
                "(~/.ray/auth_token on this machine, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN) in this environment"
            ) from None
    else:
        ray.init(address="local", num_cpus=options.num_cpus, **common)
    return True


class RayBuild:
    """One build of ``builder``'s zoo on Ray (see the module docstring): :meth:`run` returns the manifest.

    ``on_member(record, timing)`` hears of each member as it is recorded; :attr:`timings` holds per task the
    members made, the driver's submit and receive times, the worker's start and end times, its setup time, and
    each member's own time (what :mod:`experiments.bench_ray_zoo` reports)."""

    def __init__(
        self,
        builder: ZooBuilder,
        options: RayOptions = RayOptions(),
        on_member: Optional[Callable[[Dict[str, Any], Dict[str, Any]], None]] = None,
    ) -> None:
        self.builder = builder
        self.options = options
        self.on_member = on_member
        self.timings: List[Dict[str, Any]] = []
        self.errors: List[Tuple[str, str]] = []

    def run(self) -> Dict[str, Any]:
        ray = import_ray()
        with build_lock(self.builder.out):  # the driver alone writes the manifest, and only one driver at a time
            started = connect(ray, self.options)
            try:
                return self._run(ray)
            finally:
                if started:
                    ray.shutdown()

    # -- inside a Ray session --------------------------------------------------------------------------------------
    def _run(self, ray: Any) -> Dict[str, Any]:
        b, o = self.builder, self.options
        given = b.dataset  # before start(): a SAC zoo's start loads the data in the driver
        b.start()
        self._order = {m.name: i for i, m in enumerate(b.planned())}
        waiting = tasks_of(b.pending())
        cls, kwargs = _spec(b)
        dataset = [ray.put(given)] if given is not None else None
        slots = self._slots(ray)
        options: Dict[str, Any] = dict(num_cpus=o.cpus_per_member, max_retries=o.max_retries, retry_exceptions=False)
        if o.gpus_per_member:
            options.update(num_gpus=o.gpus_per_member, runtime_env={"env_vars": {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}})
        remote = ray.remote(make_members).options(**options)
        running: Dict[Any, Tuple[_Task, float]] = {}
        try:
            while True:
                for task in self._ready(waiting, running) if not self.errors else []:
                    if len(running) >= slots:
                        break
                    waiting.remove(task)
                    submitted = time.time()  # before the arguments are serialized
                    ref = remote.remote(cls, kwargs, dataset, task.names, b.manifest, o.cpus_per_member)
                    running[ref] = (task, submitted)
                if not running:
                    break
                done, _ = ray.wait(list(running), num_returns=1)
                task, submitted = running.pop(done[0])
                self._receive(ray, done[0], task, submitted, waiting)
        finally:
            for ref in running:  # interrupted: stop what still runs (a file written without its record is adopted)
                ray.cancel(ref, force=True)
        if self.errors:
            name, message = self.errors[0]
            more = f"; {len(self.errors) - 1} more failed" if len(self.errors) > 1 else ""
            left = len(b.pending())
            raise ZooError(
                f"zoo {b.out}: member {name} failed: {message}{more}; {left} members not built "
                "(the finished ones are recorded: run the build again for the rest)"
            )
        if waiting:  # cannot happen: every need is planned before what needs it
            raise ZooError(f"zoo {b.out}: members never ready: {', '.join(t.names[0] for t in waiting)}")
        b.manifest["complete"] = True
        self._write()
        return b.manifest

    def _slots(self, ray: Any) -> int:
        """Tasks in flight at once: as many as the cluster's resources hold."""
        res = ray.cluster_resources()
        o = self.options
        if res.get("CPU", 0.0) < o.cpus_per_member:
            raise ZooError(f"each member asks for {o.cpus_per_member} CPUs; the Ray cluster has {res.get('CPU', 0)}")
        n = res.get("CPU", 1.0) / o.cpus_per_member if o.cpus_per_member > 0 else float(len(self._order))
        if o.gpus_per_member > 0:
            if res.get("GPU", 0.0) < o.gpus_per_member:
                raise ZooError(f"each member asks for {o.gpus_per_member} GPU; the Ray cluster has {res.get('GPU', 0)}")
            n = min(n, res["GPU"] / o.gpus_per_member)
        return max(1, int(n))

    def _ready(self, waiting: List[_Task], running: Dict[Any, Tuple[_Task, float]]) -> List[_Task]:
        """Waiting tasks whose needs are recorded (or rejected: a SAC member made from a copy under the floor makes
        it again), in plan order; of a chain, the first one, when none runs."""
        b = self.builder
        busy = {t.chain for t, _ in running.values() if t.chain is not None}
        out = []
        for task in waiting:
            if task.chain is not None:
                if task.chain in busy:
                    continue
                busy.add(task.chain)  # later levels of this chain wait for this one
            if all(b.record(n) is not None or b._rejected(n) is not None for n in task.needs):
                out.append(task)
        return out

    def _receive(self, ray: Any, ref: Any, task: _Task, submitted: float, waiting: List[_Task]) -> None:
        received = time.time()
        try:
            result = ray.get(ref)
        except Exception as exc:  # the worker died more often than max_retries, or Ray failed
            self.errors.append((task.names[0], one_line(exc)))
            return
        timing = {
            "members": task.names,
            "submitted": submitted,
            "received": received,
            **{k: result.get(k) for k in ("started", "ended", "setup_seconds", "pid", "host")},
            "seconds": {},
        }
        self.timings.append(timing)
        for m in result["members"]:
            name = m["name"]
            if "error" in m:
                log.debug("zoo member %s failed in its worker:\n%s", name, m["traceback"])
                self.errors.append((name, m["error"]))
                continue
            timing["seconds"][name] = m["seconds"]
            if m["rejected"] is not None:
                self._reject(m["rejected"], task, waiting)
            elif m["record"] is not None:
                self._record(m["record"], timing)

    def _record(self, rec: Dict[str, Any], timing: Dict[str, Any]) -> None:
        b = self.builder
        if rec.get("file") is not None:
            path = b.out / rec["file"]
            if not path.exists() or file_sha256(path) != rec["sha256"]:
                self.errors.append(
                    (
                        rec["name"],
                        f"the worker on {timing.get('host')} wrote {rec['file']}, but {path} "
                        f"{'is absent' if not path.exists() else 'holds another file'} here: the zoo folder must be "
                        "on a file system every Ray node shares, at the same path",
                    )
                )
                return
        b.manifest["models"] = [r for r in b.manifest["models"] if r["name"] != rec["name"]] + [rec]
        self._write()
        if self.on_member is not None:
            self.on_member(rec, timing)

    def _reject(self, rej: Dict[str, Any], task: _Task, waiting: List[_Task]) -> None:
        """A pruning level whose accuracy loss exceeds 3 %: recorded; the later levels of its chain are not made."""
        b = self.builder
        if b._rejected(rej["name"]) is None:
            b.manifest.setdefault("rejected", []).append(rej)
        waiting[:] = [t for t in waiting if t.chain is None or t.chain != task.chain]
        self._write()
        log.info("zoo: %s rejected (%s)", rej["name"], rej.get("reason"))

    def _write(self) -> None:
        """The manifest, records in plan order (as a serial build leaves them)."""
        m, last = self.builder.manifest, len(self._order)
        m["models"].sort(key=lambda r: self._order.get(r["name"], last))
        m.get("rejected", []).sort(key=lambda r: self._order.get(r["name"], last))
        write_manifest(self.builder.out, m)


def build_on_ray(
    builder: ZooBuilder,
    options: RayOptions = RayOptions(),
    on_member: Optional[Callable[[Dict[str, Any], Dict[str, Any]], None]] = None,
) -> Dict[str, Any]:
    """Build ``builder``'s zoo on Ray (see the module docstring); return the manifest."""
    return RayBuild(builder, options, on_member).run()
