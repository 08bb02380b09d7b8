"""Splitting independent per-point work over the replica devices of a ``tf.distribute`` strategy."""

from __future__ import annotations

from typing import Any, Callable, List

import numpy as np


def replica_devices(distribute: Any) -> List[str]:
    """The devices of the strategy's replicas (empty without a strategy)."""
    return [] if distribute is None else list(distribute.extended.worker_devices)


def run_sharded(distribute: Any, n: int, fn: Callable[[np.ndarray], Any]) -> List[Any]:
    """Call ``fn(indices)`` on contiguous shards of ``range(n)``, one per replica device, concurrently, each under
    its device scope; return the results in shard order. Without a strategy of two or more replicas (or with
    fewer than two points) ``fn`` runs once on all indices."""
    devices = replica_devices(distribute)
    if len(devices) < 2 or n < 2:
        return [fn(np.arange(n))]
    import concurrent.futures

    import tensorflow as tf

    shards = [s for s in np.array_split(np.arange(n), len(devices)) if len(s)]

    def run(dev, idx):
        with tf.device(dev):
            return fn(idx)

    with concurrent.futures.ThreadPoolExecutor(len(shards)) as pool:
        return list(pool.map(run, devices[: len(shards)], shards))
