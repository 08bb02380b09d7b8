"""How k trades robustness for uniqueness on the Fashion-MNIST target: the demo's suspects, a small k grid.

    python experiments/k_probe.py [--k 0.5 1 2 5 10] [--strategies TL TR RL RR] [--seed 0] \
        [--out experiments/results/k_probe]

Suspects: the demo's FTLL copy (positive) and the same architecture trained from seed 1 (negative): the zoo's
`ftll` and `same_arch_seed01` in pretrained/fashion_mnist (made in the demo cache if missing). Writes
results.csv and run.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipguard_tf.evaluation.demo import compute_demo  # noqa: E402
from ipguard_tf.io.data import load_fashion_mnist  # noqa: E402
from ipguard_tf.io.files import run_record, write_csv, write_json  # noqa: E402
from ipguard_tf.methods import IPGuard  # noqa: E402
from ipguard_tf.verification.suspects import verify  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=float, nargs="+", default=[0.5, 1.0, 2.0, 5.0, 10.0])
    ap.add_argument("--strategies", nargs="+", default=["TL", "TR", "RL", "RR"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="demo cache (default ~/.cache/ipguard_tf/demo)")
    ap.add_argument("--out", default="experiments/results/k_probe")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    _, _, _, models = compute_demo(args.workdir, progress=False)  # the demo's target and suspects
    ds = load_fashion_mnist()
    target, ftll, neg = models["target"], models["ftll"], models["negative"]
    rows = []
    for k in args.k:
        for s in args.strategies:
            fp = IPGuard(k=k, init=s[0], label=s[1], seed=args.seed).generate(target, 100, ds.x_train)
            row = {
                "k": k,
                "strategy": s,
                "converged": fp.n_converged,
                "seconds": fp.metadata["seconds"],
                "self": verify(fp, target).matching_rate,
                "ftll": verify(fp, ftll).matching_rate,
                "negative_seed1": verify(fp, neg).matching_rate,
            }
            logging.info("%s", row)
            rows.append(row)
    out = Path(args.out)
    write_csv(out / "results.csv", rows, ["k", "strategy", "converged", "seconds", "self", "ftll", "negative_seed1"])
    write_json(out / "run.json", run_record(vars(args)))


if __name__ == "__main__":
    main()
