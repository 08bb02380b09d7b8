"""How k trades robustness for uniqueness on the Fashion-MNIST target: the demo's suspects, a small k grid.

    python experiments/k_probe.py [--k 0.5 1 2 5 10] [--strategies TL TR RL RR] [--seed 0] \
        [--out experiments/results/k_probe]

Suspects: the demo's FTLL copy (positive) and the same architecture trained from seed 1 (negative), taken from
the demo cache (made by `ipguard demo`; made here if missing). Writes results.csv and run.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipguard_tf.data import load_fashion_mnist  # noqa: E402
from ipguard_tf.demo import compute_demo  # noqa: E402
from ipguard_tf.methods import IPGuard  # noqa: E402
from ipguard_tf.results import run_record, write_csv, write_json  # noqa: E402
from ipguard_tf.verification import verify  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=float, nargs="+", default=[0.5, 1.0, 2.0, 5.0, 10.0])
    ap.add_argument("--strategies", nargs="+", default=["TL", "TR", "RL", "RR"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="demo cache (default ~/.cache/ipguard_tf/demo)")
    ap.add_argument("--out", default="experiments/results/k_probe")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    import keras

    from ipguard_tf.demo import NEGATIVE_SEED, repo_pretrained_dir
    import os

    compute_demo(args.workdir, progress=False)  # makes sure the suspects exist in the cache
    work = Path(args.workdir) if args.workdir else Path(os.path.expanduser("~/.cache/ipguard_tf/demo"))
    ds = load_fashion_mnist()
    target = keras.saving.load_model(repo_pretrained_dir() / "fashion_mnist" / "target.keras")
    ftll = keras.saving.load_model(work / "ftll_seed0.keras")
    neg = keras.saving.load_model(work / f"negative_seed{NEGATIVE_SEED}.keras")
    rows = []
    for k in args.k:
        for s in args.strategies:
            fp = IPGuard(k=k, init=s[0], label=s[1], seed=args.seed).generate(target, 100, ds.x_train)
            row = {"k": k, "strategy": s, "converged": fp.n_converged, "seconds": fp.metadata["seconds"],
                   "self": verify(fp, target).matching_rate, "ftll": verify(fp, ftll).matching_rate,
                   "negative_seed1": verify(fp, neg).matching_rate}
            logging.info("%s", row)
            rows.append(row)
    out = Path(args.out)
    write_csv(out / "results.csv", rows, ["k", "strategy", "converged", "seconds", "self", "ftll", "negative_seed1"])
    write_json(out / "run.json", run_record(vars(args)))


if __name__ == "__main__":
    main()
