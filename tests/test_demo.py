"""The README's demo, end to end (trains the negative suspect: about two minutes)."""

import os
import re

import pytest

from ipguard_tf.cli import main
from ipguard_tf.io.data import FASHION_MNIST_DEBIAN_DIR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (
            os.path.exists(os.path.join(FASHION_MNIST_DEBIAN_DIR, "train-images-idx3-ubyte.gz"))
            or os.environ.get("IPGUARD_FASHION_MNIST_DIR")
        ),
        reason="Fashion-MNIST not installed",
    ),
]


def test_demo_separates_copy_from_independent_model(tmp_path, capsys):
    assert main(["-q", "demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rate = {}
    for name in ("target itself", "FTLL copy", "fmnist_cnn seed 1"):
        line = next(l for l in out.splitlines() if l.startswith(name))
        rate[name] = float(re.split(r"\s{2,}", line.strip())[3])
    assert rate["target itself"] == 1.0
    assert rate["FTLL copy"] >= 0.9
    assert rate["FTLL copy"] - rate["fmnist_cnn seed 1"] >= 0.5


def test_demo_finds_the_repository_pretrained_folder(monkeypatch):
    """The demo takes its target from the checkout's pretrained/ (a wrong path made it retrain the target and
    report other numbers than the README's)."""
    from ipguard_tf.evaluation.demo import repo_pretrained_dir

    monkeypatch.delenv("IPGUARD_PRETRAINED", raising=False)
    assert (repo_pretrained_dir() / "fashion_mnist" / "target.keras").is_file()
