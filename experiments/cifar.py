"""Build a CIFAR zoo and run the paper's sweep on it, in one resumable command (issue 16, item 5).

    python experiments/cifar.py --dataset cifar10 [--profile quick|paper]
    python experiments/cifar.py --dataset cifar100

For a machine with the data (``keras.datasets`` archives in ~/.keras/datasets, or internet once) and a GPU:
the zoo (``pretrained/<dataset>``, the config's ``zoo``) is built with the published training schedules
(``ipguard_tf/zoo/train.py``: ResNet-20 with step decay, WRN-22-4 and VGG16 with theirs), then
``experiments/reproduce.py`` runs ``experiments/configs/<dataset>.json`` into ``experiments/results/<dataset>``.
Both steps resume where a killed run stopped. Without the data: a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ipguard_tf.core.errors import IPGuardError  # noqa: E402
from ipguard_tf.io.data import load_dataset  # noqa: E402
from ipguard_tf.zoo.builder import PROFILES, ZooBuilder  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, choices=["cifar10", "cifar100"])
    ap.add_argument("--profile", default="quick", choices=["quick", "paper"])
    ap.add_argument("--config", default=None, help="sweep config (default experiments/configs/<dataset>.json)")
    ap.add_argument("--out", default=None, help="results folder (default experiments/results/<dataset>)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    config = Path(args.config or ROOT / "experiments" / "configs" / f"{args.dataset}.json")
    out = args.out or str(ROOT / "experiments" / "results" / args.dataset)
    try:
        zoo = json.loads(config.read_text())["zoo"]
        dataset = load_dataset(args.dataset)  # fails early, in one line, where the data is absent
        ZooBuilder(args.dataset, zoo, PROFILES[args.profile], dataset=dataset).build()
    except (IPGuardError, OSError, KeyError, json.JSONDecodeError) as exc:
        sys.stderr.write(f"cifar.py: error: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}\n")
        return 2
    from experiments import reproduce

    return reproduce.main(["--config", str(config), "--out", out])


if __name__ == "__main__":
    sys.exit(main())
