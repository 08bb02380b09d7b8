"""Versions and machine description recorded in every fingerprint and results file."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from typing import Dict


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


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
