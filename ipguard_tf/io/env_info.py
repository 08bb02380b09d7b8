"""Versions and machine description recorded in every fingerprint and results file."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from typing import Dict, Optional


def versions() -> Dict[str, str]:
    """Versions of Python and of the libraries that affect results."""
    out = {"python": platform.python_version()}
    for mod in ("ipguard_tf", "tensorflow", "keras", "tf_keras", "numpy", "sklearn", "tensorflow_model_optimization"):
        m = sys.modules.get(mod)
        if m is None and mod in ("ipguard_tf", "tensorflow", "keras", "numpy"):
            try:
                m = __import__(mod)
            except Exception:
                m = None
        if m is not None:
            out[mod] = str(getattr(m, "__version__", "?"))
    return out


def machine() -> Dict[str, str]:
    """A short description of the machine (CPU, core count, OS)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = []
    try:
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    except Exception:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "gpus": ",".join(gpus) or "none",
        "os": f"{platform.system()} {platform.release()}",
    }


#: instruction-set flags that decide which CPU kernels TensorFlow (Eigen, oneDNN) runs, hence its rounding
_KERNEL_FLAGS = (
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "avx_vnni",
)


def platform_key() -> Dict[str, object]:
    """What must be equal for two runs to compute bit for bit the same numbers (see README, "Reproducibility"):
    the CPU model, its kernel-relevant instruction-set flags, cache sizes (Eigen blocks matrix products by them)
    and core count (reductions are split over threads), the oneDNN switch, and the versions of the numerical
    libraries."""
    flags, caches = [], {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    flags = [f for f in _KERNEL_FLAGS if f in present]
                    break
    except OSError:
        pass
    base = "/sys/devices/system/cpu/cpu0/cache"
    for i in range(8):
        try:
            with (
                open(f"{base}/index{i}/level") as a,
                open(f"{base}/index{i}/type") as b,
                open(f"{base}/index{i}/size") as c,
            ):
                caches[f"L{a.read().strip()}{b.read().strip()[0].lower()}"] = c.read().strip()
        except OSError:
            break
    v = versions()
    return {
        "cpu": machine()["cpu"],
        "cores": os.cpu_count(),
        "isa": flags,
        "caches": caches,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        **{k: v.get(k) for k in ("tensorflow", "keras", "numpy")},
    }


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def available_memory() -> Optional[int]:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; elsewhere the free physical pages),
    or None when it cannot be told."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None
