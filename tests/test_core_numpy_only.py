"""The core layer (ipguard_tf.core) is NumPy only: it imports and computes with TensorFlow and Keras blocked, and
reads no files (docs/architecture.md)."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import importlib, importlib.abc, pkgutil, sys

    class Block(importlib.abc.MetaPathFinder):
        BLOCKED = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "tqdm", "matplotlib")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"the core imported {name}")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    import ipguard_tf.core as core
    names = [m.name for m in pkgutil.walk_packages(core.__path__, "ipguard_tf.core.")]
    for name in names:
        importlib.import_module(name)
    from ipguard_tf.core.calibration import Calibration
    from ipguard_tf.core.fingerprint import Fingerprint
    from ipguard_tf.core.metrics import aruc
    from ipguard_tf.core.statistics import MATCHING_RATE, OUTPUT_CORRELATION, SAC_DISTANCE

    rng = np.random.default_rng(0)
    n = 20
    fp = Fingerprint(x=rng.random((n, 4, 4, 1)), y=rng.integers(0, 3, n), source=np.zeros(n), target=np.ones(n),
                     iterations=np.zeros(n), objective=np.zeros(n), converged=np.ones(n, bool),
                     distortion=np.zeros(n), metadata={"num_classes": 3, "statistic": "matching_rate"},
                     outputs=rng.normal(size=(n, 3)))
    same = MATCHING_RATE.verification("self", fp, lambda x: fp.y, 0.5)
    assert same.matching_rate == 1.0 and same.verdict == 1 and same.matches == n
    assert SAC_DISTANCE.value(fp, lambda x: fp.outputs) == 0.0
    assert abs(OUTPUT_CORRELATION.value(fp, lambda x: fp.outputs) - 1.0) < 1e-12
    cal = Calibration(tuple(f"m{i}" for i in range(12)), rng.random((12, n)) < 0.3, fpr=0.05)
    assert 0 < cal.p_value(n) < 0.05 and cal.subset(np.arange(n) < 10).n == 10
    assert aruc([1.0, 0.9], [0.1, 0.2]) > 0.6
    blocked = [m for m in ("tensorflow", "keras", "tf_keras") if m in sys.modules]
    assert not blocked, blocked
    print(len(names), "core modules")
""")


def test_core_imports_and_computes_without_tensorflow():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[0]) >= 9  # every module of the core was imported


#: what the core's own modules may import: the standard library's pure parts, NumPy, and SciPy / scikit-learn for
#: one function each (beta quantiles, ROC AUC); no paths, no argument parsing, no progress bars, no TensorFlow
ALLOWED = {
    "__future__",
    "abc",
    "base64",
    "dataclasses",
    "functools",
    "importlib",
    "logging",
    "math",
    "numbers",
    "typing",
    "numpy",
    "scipy",
    "sklearn",
    "ipguard_tf",
}


def test_core_modules_import_only_numpy_and_pure_standard_library():
    found = {}
    for f in sorted((ROOT / "ipguard_tf" / "core").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(f.name)
    assert "numpy" in found and set(found) <= ALLOWED, {k: v for k, v in found.items() if k not in ALLOWED}
    # and within the package, only the core itself
    inner = {
        f.name
        for f in (ROOT / "ipguard_tf" / "core").glob("*.py")
        for n in ast.walk(ast.parse(f.read_text()))
        if isinstance(n, ast.ImportFrom)
        and n.module
        and n.module.startswith("ipguard_tf.")
        and not n.module.startswith("ipguard_tf.core")
    }
    assert not inner, inner
