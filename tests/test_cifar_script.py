"""experiments/cifar.py: one command builds a CIFAR zoo and runs the sweep (issue 16, item 5); here without
the data, with the zoo build and the sweep replaced by recorders."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments import cifar  # noqa: E402


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_builds_the_configured_zoo_then_sweeps(dataset, monkeypatch):
    from experiments import reproduce

    seen = {}
    monkeypatch.setattr(cifar, "load_dataset", lambda name: seen.setdefault("data", name))

    class Builder:
        def __init__(self, name, out, profile, dataset=None):
            seen.update(builder=(name, out, profile.name, dataset))

        def build(self):
            seen["built"] = True

    monkeypatch.setattr(cifar, "ZooBuilder", Builder)
    monkeypatch.setattr(reproduce, "main", lambda argv: seen.setdefault("sweep", argv) and 0)
    assert cifar.main(["--dataset", dataset]) == 0
    cfg = json.loads((ROOT / "experiments" / "configs" / f"{dataset}.json").read_text())
    assert cfg["dataset"] == dataset and cfg["method_params"]["cae"]["zoo"] == cfg["zoo"]
    assert seen["builder"] == (dataset, cfg["zoo"], "quick", dataset) and seen["built"]
    assert seen["sweep"][:2] == ["--config", str(ROOT / "experiments" / "configs" / f"{dataset}.json")]
    assert seen["sweep"][3].endswith(f"experiments/results/{dataset}")


def test_absent_data_is_one_line_and_exit_2(monkeypatch, capsys):
    from ipguard_tf.core.errors import DataError

    def absent(name):
        raise DataError("cifar10 could not be loaded through keras.datasets (URLError); it needs internet once")

    monkeypatch.setattr(cifar, "load_dataset", absent)
    assert cifar.main(["--dataset", "cifar10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not be loaded" in err[0]
