"""Sweeps on Ray (issue 32): ``python experiments/reproduce.py --config C --out O --ray [ADDRESS]``.

A sweep is many independent points (method, strategy, setting, seed): each generates one fingerprint and verifies
every suspect of the zoo on it (:meth:`~ipguard_tf.evaluation.sweep.Sweep.run`). :func:`run_on_ray` fans the points
out, one Ray task per point, declaring its CPUs (and GPUs when asked), as the zoo builds do
(:mod:`ipguard_tf.zoo.parallel`, whose connection and options it shares). A task gets only picklable arguments: the
sweep's cache folder, the zoo folder and the suspects' names, the sweep's settings, and the owner's data as one Ray
object put once. The worker re-creates the sweep (kept for its next task: the target and the suspects are loaded
once per worker process) and runs the point exactly as a serial sweep does, writing the fingerprint and the rates
into the sweep's cache with the same atomic writers, one file per point: no two tasks write the same file. The
driver then runs the sweep as before and finds every point cached, so the tables do not depend on the engine.

The driver loads the suspects first (rebuilding members absent from the repository, one after another), so that
no two workers rebuild a member. A point's exception comes back as one line naming the point, after the running
tasks have finished; those points are cached and a second run does only the rest (the cache is the resume).
Tasks whose worker dies are retried ``max_retries`` times. On a cluster the cache folder and the zoo must be on a
file system every node shares, at the same paths.

Results do not depend on the engine where the computation is the same: the points of a search are bit-identical
when TensorFlow runs the same kernels with the same threads; a Ray worker runs TensorFlow with its task's CPUs
(one by default), and a serial sweep with all of the machine's, so an iterative search (IPGuard, CW) may end a
point elsewhere by rounding; the random and one-step methods do not (see ``tests/test_sweep_ray.py``).
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ipguard_tf.evaluation.sweep import Sweep, load_zoo_suspects, run_key
from ipguard_tf.models.classifier import as_classifier
from ipguard_tf.zoo.members import load_member
from ipguard_tf.zoo.parallel import RayOptions, connect, import_ray, limit_threads, one_line
from ipguard_tf.zoo.store import ZooError

log = logging.getLogger(__name__)

#: one sweep point: (method, strategy, setting, seed)
Point = Tuple[str, str, Optional[float], int]

#: in a worker process: the sweep of its last task, with its target and suspects loaded
_WORKER_SWEEPS: Dict[str, Sweep] = {}


def _worker_sweep(spec: Dict[str, Any], data: Any) -> Sweep:
    key = repr(sorted((k, repr(v)) for k, v in spec.items()))
    sweep = _WORKER_SWEEPS.get(key)
    if sweep is None:
        import ray

        _WORKER_SWEEPS.clear()
        train_x, train_y, method_data = ray.get(data[0])
        zoo = Path(spec["zoo"])
        suspects = load_zoo_suspects(zoo, spec["data_dir"], spec["suspects"], other_label_sets=True)
        sweep = Sweep(
            Path(spec["folder"]),
            load_member(zoo, "target", data_dir=spec["data_dir"]),
            train_x,
            suspects,
            n=spec["n"],
            dataset=spec["dataset"],
            method_params=spec["method_params"],
            progress=False,
            train_y=train_y,
            method_data=method_data,
        )
        _WORKER_SWEEPS[key] = sweep
    return sweep


def run_point(spec: Dict[str, Any], data: list, point: Point, cpus: float = 1.0) -> Dict[str, Any]:
    """One task: run sweep point ``point`` of the sweep ``spec`` describes; its run record, or its error as one
    line, with the worker's timings."""
    started = time.time()
    out: Dict[str, Any] = {"point": list(point), "started": started}
    try:
        limit_threads(cpus)
        sweep = _worker_sweep(spec, data)
        out["setup_seconds"] = time.time() - started
        out["run"] = sweep.run(*point)
    except Exception as exc:
        out.update(error=one_line(exc), traceback=traceback.format_exc())
    out["ended"] = time.time()
    return out


def run_on_ray(
    sweep: Sweep,
    zoo: Any,
    points: Sequence[Point],
    options: Optional[RayOptions] = None,
    data_dir: Optional[str] = None,
) -> Dict[str, Dict[str, Any]]:
    """Run ``points`` of ``sweep`` (whose suspects are members of ``zoo``) on Ray, one task per point not yet
    cached; return the run records by run key. The sweep's cache then holds every point (see the module
    docstring)."""
    ray = import_ray()
    options = options or RayOptions()
    todo = [p for p in points if not sweep.is_cached(*p)]
    if not todo:
        return {}
    spec = {
        "folder": str(Path(sweep.folder).resolve()),
        "zoo": str(Path(zoo).resolve()),
        "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
        "suspects": [s.name for s in sweep.suspects],
        "n": sweep.n,
        "dataset": sweep.dataset,
        "method_params": sweep.method_params,
    }
    target = as_classifier(load_member(Path(zoo), "target", data_dir=data_dir))
    if target.weights_sha256 != sweep.target.weights_sha256:
        raise ZooError(f"the sweep's target is not {zoo}'s target: a sweep on Ray reads its zoo's target file")
    started = connect(ray, options)
    try:
        opts: Dict[str, Any] = dict(num_cpus=options.cpus_per_member, max_retries=options.max_retries)
        opts["retry_exceptions"] = False
        if options.gpus_per_member:
            opts.update(
                num_gpus=options.gpus_per_member, runtime_env={"env_vars": {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}}
            )
        remote = ray.remote(run_point).options(**opts)
        data = [ray.put((sweep.train_x, sweep.train_y, sweep.method_data))]
        refs = {remote.remote(spec, data, p, options.cpus_per_member): p for p in todo}
        results: Dict[str, Dict[str, Any]] = {}
        errors: List[Tuple[str, str]] = []
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            point = refs.pop(done[0])
            try:
                res = ray.get(done[0])
            except Exception as exc:  # the worker died more often than max_retries
                errors.append((run_key(*point), one_line(exc)))
                continue
            if "error" in res:
                log.debug("sweep point %s failed in its worker:\n%s", point, res["traceback"])
                errors.append((run_key(*point), res["error"]))
                continue
            results[res["run"]["key"]] = res["run"]
            log.info("sweep point %s done on Ray (%.1f s)", res["run"]["key"], res["ended"] - res["started"])
    finally:
        if started:
            ray.shutdown()
    if errors:
        key, message = errors[0]
        more = f"; {len(errors) - 1} more failed" if len(errors) > 1 else ""
        raise ZooError(
            f"sweep point {key} failed: {message}{more} (the finished points are cached: run again for the rest)"
        )
    return results
