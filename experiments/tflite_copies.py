"""Quantized TFLite copies verified through the command line (issue 14): for each zoo's target, an IPGuard
fingerprint made with ``ipguard extract`` and the zoo's float16 and int8 ``.tflite`` copies checked with
``ipguard verify`` (the TFLite interpreter, no Python from the file), beside the target itself.

    python experiments/tflite_copies.py [--zoo pretrained/fashion_mnist --zoo pretrained/sac_fashion_mnist] \
        [--out experiments/results/tflite_copies]

IPGuard-TL at the project's defaults (k = 1, 1,000 iterations, n = 100, seed 0), initialised from Fashion-MNIST's
training set (for the SAC zoo that includes the attacker half: this check is about the copies, not SAC's
setting). Writes ``results.json``, ``README.md`` and ``run.json``; the fingerprints go to ``OUT/fp`` (git-ignored
like every cache).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipguard_tf.cli import main as ipguard  # noqa: E402
from ipguard_tf.io.files import atomic_write_bytes, markdown_table, run_record, write_json  # noqa: E402
from ipguard_tf.zoo.store import read_manifest  # noqa: E402


def _cli(argv):
    """Run ``ipguard argv``; its stdout, or SystemExit with the exit status."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = ipguard(argv)
    if rc != 0:
        raise SystemExit(f"ipguard {' '.join(argv)} exited with {rc}")
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", action="append", help="zoo folders (default: both Fashion-MNIST zoos)")
    ap.add_argument("--out", default="experiments/results/tflite_copies")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    zoos = args.zoo or ["pretrained/fashion_mnist", "pretrained/sac_fashion_mnist"]
    out = Path(args.out)
    (out / "fp").mkdir(parents=True, exist_ok=True)
    results, commands = [], []
    for zoo in zoos:
        recs = {r["name"]: r for r in read_manifest(Path(zoo))["models"]}
        fp = out / "fp" / f"{Path(zoo).name}.npz"
        extract = [
            "-q",
            "extract",
            "--model",
            f"{zoo}/target.keras",
            "--method",
            "ipguard",
            "--n",
            str(args.n),
            "--seed",
            str(args.seed),
            "--out",
            str(fp),
        ]
        if not fp.exists():
            _cli(extract)
        suspects = [f"{zoo}/target.keras"] + [f"{zoo}/{recs[n]['file']}" for n in ("tflite_float16", "tflite_int8")]
        verify = ["-q", "verify", "--fingerprint", str(fp), "--json"] + [a for s in suspects for a in ("--suspect", s)]
        commands += ["ipguard " + " ".join(extract[1:]), "ipguard " + " ".join(verify[1:])]
        for r in json.loads(_cli(verify)):
            name = Path(r["suspect"]).stem
            rec = recs.get(name, {})
            results.append(
                {
                    "zoo": zoo,
                    "suspect": r["suspect"],
                    "matching_rate": r["value"],
                    "verdict": r["verdict"],
                    "test_accuracy": rec.get("test_accuracy"),
                    "size_bytes": rec.get("size_bytes"),
                }
            )
    write_json(out / "results.json", {"results": results, "commands": commands})
    md = markdown_table(
        [[r["suspect"], r["matching_rate"], r["verdict"], r["test_accuracy"], r["size_bytes"]] for r in results],
        ["suspect", "matching rate", "verdict", "test accuracy", "bytes"],
    )
    atomic_write_bytes(
        out / "README.md",
        (
            "# Quantized TFLite copies, verified through the CLI\n\nMade by `python experiments/tflite_copies.py` "
            "(command, versions and machine in `run.json`). IPGuard-TL fingerprints (k = 1, 1,000 iterations, "
            f"n = {args.n}, seed {args.seed}) of each zoo's target, verified on the target and on its float16 and "
            "int8 TFLite copies (TensorFlow's converter; int8 calibrated on 500 inputs) by these commands:\n\n"
            + "".join(f"    {c}\n" for c in commands)
            + "\n"
            + md
            + "\n"
        ).encode(),
    )
    write_json(out / "run.json", run_record({"zoos": zoos, "n": args.n, "seed": args.seed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
