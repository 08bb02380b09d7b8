"""What verifying one suspect costs, measured in one run on one machine (issue 15: "SAC-m verification of one
suspect costs one batched forward pass of its 100 samples").

    python experiments/bench_verification.py [--zoo pretrained/sac_fashion_mnist] [--reps 20]
                                             [--out experiments/results/bench]

For each method (SAC-m, SAC-w, IPGuard at the SAC benchmark's settings, and with --cae CAE, whose extraction
takes minutes here and whose verification is a matching rate like IPGuard's) it extracts a fingerprint of the
zoo's source (n = 100, seed 0, from the defender half), then verifies one
suspect (the zoo's Extract-L VGG13 student) through the library's ``verify``, counting the suspect's forward
calls and the examples in each, and times it against one bare batched forward pass of the same 100 points
through the same suspect (the floor). Prints and writes medians over --reps and the ratio verify / floor.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from ipguard_tf import as_classifier
from ipguard_tf.core import registry  # noqa: E402
from ipguard_tf.io.data import load_fashion_mnist  # noqa: E402
from ipguard_tf.io.files import atomic_write_bytes, format_table, run_record, write_csv, write_json  # noqa: E402
from ipguard_tf.verification.suspects import verify  # noqa: E402
from ipguard_tf.zoo.members import load_member, method_inputs  # noqa: E402
from ipguard_tf.zoo.sac import sac_split  # noqa: E402
from ipguard_tf.zoo.store import ENSEMBLE_ROLES, members


def median_seconds(fn, reps: int) -> float:
    fn()  # warm-up (traces the graph once, as every later call finds it)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default="pretrained/sac_fashion_mnist")
    ap.add_argument("--suspect", default="extract_l_vgg13_s1")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--cae", action="store_true", help="also CAE (the zoo's ensemble; about 4 min to extract)")
    ap.add_argument("--out", default="experiments/results/bench")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    zoo = Path(args.zoo)
    defender = sac_split(load_fashion_mnist()).defender
    target = as_classifier(load_member(zoo, "target"))
    roles = {r["role"] for r in members(zoo)}
    methods = {"sac-m": {}, "sac-w": {}, "ipguard": {"k": 1.0, "init": "T", "label": "L"}}
    if args.cae and set(ENSEMBLE_ROLES) <= roles:
        methods["cae"] = {"zoo": str(zoo)}
    rows = []
    for method, params in methods.items():
        fp = registry.build(method, seed=0, **params, **method_inputs(method, params)).generate(
            target, 100, defender.x, train_y=defender.y
        )
        suspect = as_classifier(load_member(zoo, args.suspect), name=args.suspect)
        calls = []
        forward = suspect._forward()

        def counted(x, _f=forward, calls=calls):
            calls.append(int(x.shape[0]))
            return _f(x)

        suspect._compiled = counted  # every batched prediction of the suspect goes through its compiled forward
        result = verify(fp, suspect)
        per_verify = list(calls)
        t_verify = median_seconds(lambda fp=fp, suspect=suspect: verify(fp, suspect), args.reps)
        x = np.asarray(fp.x)
        t_floor = median_seconds(lambda forward=forward, x=x: forward(x).numpy(), args.reps)
        rows.append(
            {
                "method": method,
                "statistic": result.statistic,
                "points": len(fp),
                "forward_calls": len(per_verify),
                "examples_per_call": " ".join(map(str, per_verify)),
                "verify_ms": round(t_verify * 1e3, 3),
                "forward_ms": round(t_floor * 1e3, 3),
                "ratio": round(t_verify / t_floor, 2),
                "value": round(float(result.value), 4),
            }
        )
        print(
            f"{method:8s} verify {t_verify * 1e3:8.2f} ms, {len(per_verify)} forward call(s) of "
            f"{' '.join(map(str, per_verify))} examples; one bare forward of the {len(fp)} points "
            f"{t_floor * 1e3:8.2f} ms; ratio {t_verify / t_floor:.2f}",
            flush=True,
        )
    out = Path(args.out)
    cols = [
        (c, c, "{}")
        for c in (
            "method",
            "statistic",
            "points",
            "forward_calls",
            "examples_per_call",
            "verify_ms",
            "forward_ms",
            "ratio",
            "value",
        )
    ]
    write_csv(out / "verification.csv", rows, [c for _, c, _ in cols])
    atomic_write_bytes(
        out / "verification.txt",
        (
            f"suspect {args.suspect} of {zoo}, medians of {args.reps} runs\n\n" + format_table(rows, cols) + "\n"
        ).encode(),
    )
    write_json(out / "verification_run.json", run_record(vars(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
