"""Seconds per training epoch of 30,000 28x28 images for each SAC zoo architecture (how the widths in
``ipguard_tf.zoo.architectures.SAC_ARCHITECTURES`` were chosen), with the zoo's SGD step.

    python experiments/time_sac_architectures.py [--examples 2048] [--out experiments/results/sac_arch_timing]

Each architecture trains one epoch on ``--examples`` random images (graph tracing included) and then three;
the difference, scaled to 30,000 images, is the per-epoch time without tracing. Writes results.csv and run.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from ipguard_tf.io.files import run_record, write_csv, write_json  # noqa: E402
from ipguard_tf.zoo.architectures import SAC_ARCHITECTURES, build_architecture  # noqa: E402
from ipguard_tf.zoo.stealing import EXTRACT_L
from ipguard_tf.zoo.train import _ce_loss, sgd_train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=2048)
    ap.add_argument("--out", default="experiments/results/sac_arch_timing")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    rng = np.random.default_rng(0)
    x = rng.random((args.examples, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.examples)
    rows = []
    for name in SAC_ARCHITECTURES:
        model = build_architecture(name, (28, 28, 1), 10)
        seconds = []
        for epochs in (1, 3):
            recipe = type(EXTRACT_L)(**dict(EXTRACT_L.as_dict(), epochs=epochs))
            t0 = time.perf_counter()
            sgd_train(model, x, y, _ce_loss, recipe, seed=0, progress=False)
            seconds.append(time.perf_counter() - t0)
        per_epoch = (seconds[1] - seconds[0]) / 2 / args.examples * 30000
        rows.append(
            {"architecture": name, "parameters": model.count_params(), "seconds_per_30k_epoch": round(per_epoch, 1)}
        )
        logging.info("%s: %d parameters, %.1f s per epoch of 30,000 images", name, model.count_params(), per_epoch)
    out = Path(args.out)
    write_csv(out / "results.csv", rows, ["architecture", "parameters", "seconds_per_30k_epoch"])
    write_json(out / "run.json", run_record({"examples": args.examples}))


if __name__ == "__main__":
    main()
