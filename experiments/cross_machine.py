"""How much fingerprints and matching rates differ between two machines: regenerate a committed sweep's
fingerprints here and compare them with the reference machine's, point hashes and matching rates.

    python experiments/cross_machine.py --config experiments/configs/fashion_mnist.json \
        --reference experiments/results/fashion_mnist --methods ipguard fgsm igsm random \
        --out experiments/results/cross_machine

The same command, seed, zoo files and library versions give bit-identical fingerprints on one machine; another
CPU computes the model's convolutions and reductions with other kernels, rounding differs in the last bits,
and a 1,000-step Adam search near a decision boundary amplifies that into other points. This script measures
the consequence: for every run of the reference sweep (of the chosen methods) it generates the fingerprint
again here, says whether its points are bit-identical to the reference's (the SHA-256 the reference's rates
cache records), and compares the matching rates of the suspects stored in the repository (the models are the
same bytes on both machines, so every difference comes from the points). VGG16 and random-forest suspects are
left out: they are rebuilt on demand, and their rebuilt weights differ between CPUs too.

Writes ``deltas.csv`` (run, suspect, reference rate, rate here, difference), ``runs.csv`` (per run: points
identical?, converged here and there, largest difference), ``README.md`` (the summary as a table),
``summary.json`` (the tolerance the regression test
uses: the largest |difference| over all IPGuard runs and suspects) and ``run.json`` (command, versions, machine);
this machine's rates are cached under ``cache/rates`` (fingerprints under ``cache/fp``, not committed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from ipguard_tf.evaluation.sweep import SUSPECT_ROLES, Sweep, load_zoo_suspects, run_key  # noqa: E402
from ipguard_tf.io.data import load_dataset  # noqa: E402
from ipguard_tf.io.env_info import platform_key  # noqa: E402
from ipguard_tf.io.files import atomic_write_bytes, markdown_table, run_record, write_csv, write_json  # noqa: E402
from ipguard_tf.zoo.members import load_member
from ipguard_tf.zoo.store import members  # noqa: E402


def _reference_suspects(ref: Path, cfg: dict, methods) -> dict:
    """Suspect name -> the content SHA-256 the reference sweep measured it with (from its first cached run)."""
    for path in sorted((ref / "cache" / "rates").glob("*.json")):
        if path.name.split("_")[0] in methods:
            return json.loads(path.read_text()).get("suspect_sha256", {})
    return {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="the reference sweep's config")
    ap.add_argument("--reference", required=True, help="the reference sweep's results folder (with cache/rates)")
    ap.add_argument("--methods", nargs="+", default=["ipguard"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-dir")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    cfg = json.loads(Path(args.config).read_text())
    ref = Path(args.reference)
    ref_machine = json.loads((ref / "run.json").read_text())["machine"]
    zoo = Path(cfg["zoo"])
    # the suspects present here with the weights the reference measured (the content SHA-256 its rates cache
    # records): the ones stored in the repository, and members rebuilt here bit for bit; CAE's own models are no
    # suspects
    ref_sha = _reference_suspects(ref, cfg, args.methods)
    recs = [
        r
        for r in members(zoo)
        if r["role"] in SUSPECT_ROLES and r.get("file") and (zoo / r["file"]).exists()
        and r.get("content_sha256") == ref_sha.get(r["name"])
    ]  # fmt: skip
    stored = [r["name"] for r in recs]
    in_repo = sum(bool(r.get("in_repo", True)) for r in recs)
    suspects = load_zoo_suspects(zoo, args.data_dir, stored)
    ds = load_dataset(cfg["dataset"], args.data_dir)
    out = Path(args.out)
    sweep = Sweep(
        out / "cache",
        load_member(zoo, "target"),
        ds.x_train,
        suspects,
        n=cfg["n"],
        dataset=cfg["dataset"],
        method_params=cfg.get("method_params"),
    )
    converged_ref = _reference_converged(ref, cfg["seed"])
    deltas, runs = [], []
    for method in args.methods:
        for strategy in cfg["strategies"] if method != "random" else ["RR", "TR"]:
            for setting in cfg["grids"][method]:
                key = run_key(method, strategy, setting, cfg["seed"])
                reference = json.loads((ref / "cache" / "rates" / f"{key}.json").read_text())
                r = sweep.run(method, strategy, setting, cfg["seed"])
                here = json.loads((out / "cache" / "rates" / f"{key}.json").read_text())
                d = [r["rates"][s] - reference["rates"][s] for s in stored]
                deltas += [
                    {
                        "run": key,
                        "method": method,
                        "suspect": s,
                        "reference": reference["rates"][s],
                        "here": r["rates"][s],
                        "difference": round(x, 4),
                    }
                    for s, x in zip(stored, d)
                ]
                runs.append(
                    {
                        "run": key,
                        "method": method,
                        "points_identical": here["points_sha256"] == reference["points_sha256"],
                        "converged_here": r["n_converged"],
                        "converged_reference": converged_ref.get(key),
                        "max_abs_difference": round(max(abs(x) for x in d), 4),
                        "mean_abs_difference": round(float(np.mean(np.abs(d))), 4),
                    }
                )
                logging.info("%s", runs[-1])
    write_csv(out / "deltas.csv", deltas, ["run", "method", "suspect", "reference", "here", "difference"])
    write_csv(
        out / "runs.csv",
        runs,
        [
            "run",
            "method",
            "points_identical",
            "converged_here",
            "converged_reference",
            "max_abs_difference",
            "mean_abs_difference",
        ],
    )
    summary = {"reference_machine": ref_machine, "suspects": stored, "suspects_in_repo": in_repo, "per_method": {}}
    for method in args.methods:
        a = np.abs([x["difference"] for x in deltas if x["method"] == method])
        rs = [x for x in runs if x["method"] == method]
        summary["per_method"][method] = {
            "runs": len(rs),
            "runs_points_identical": sum(x["points_identical"] for x in rs),
            "pairs": int(a.size),
            "max_abs_difference": float(a.max()),
            "mean_abs_difference": round(float(a.mean()), 4),
            "quantiles_abs_difference": {q: float(np.quantile(a, float(q))) for q in ("0.5", "0.9", "0.99")},
        }
    if "ipguard" in summary["per_method"]:
        summary["tolerance"] = summary["per_method"]["ipguard"]["max_abs_difference"]
        summary["tolerance_note"] = (
            "largest |matching-rate difference| between this machine and the reference "
            "over every IPGuard run of the sweep and every stored suspect"
        )
    write_json(out / "summary.json", summary)
    write_json(out / "run.json", run_record({"args": vars(args), "config": cfg}))
    _readme(out, summary, runs, ref_machine)
    return 0


def _readme(out: Path, summary: dict, runs: list, ref_machine: dict) -> None:
    rows = []
    for method, s in summary["per_method"].items():
        rs = [r for r in runs if r["method"] == method]
        dconv = [
            abs(r["converged_here"] - r["converged_reference"]) for r in rs if r["converged_reference"] is not None
        ]
        q = s["quantiles_abs_difference"]
        rows.append(
            [
                method,
                s["runs"],
                s["runs_points_identical"],
                max(dconv) if dconv else None,
                s["pairs"],
                f"{s['mean_abs_difference']:.4f}",
                f"{q['0.5']:.2f}",
                f"{q['0.9']:.2f}",
                f"{q['0.99']:.2f}",
                f"{s['max_abs_difference']:.2f}",
            ]
        )
    text = (
        f"# Fingerprints across machines\n\nMade by `{' '.join(['python'] + sys.argv)}` (run.json: command, "
        f"versions, machine, platform). Here: {platform_key()['cpu']}; reference: {ref_machine.get('cpu')} "
        "(the committed Fashion-MNIST sweep). Suspects: the "
        + str(len(summary["suspects"]))
        + " zoo members present on both machines with the same content SHA-256 ("
        + f"{summary['suspects_in_repo']} stored in the repository, "
        + f"{len(summary['suspects']) - summary['suspects_in_repo']} rebuilt from their records bit for bit), so "
        "every difference comes from the points.\n\n"
        + markdown_table(
            rows,
            [
                "method",
                "runs",
                "runs with bit-identical points",
                "largest converged-count difference",
                "(run, suspect) pairs",
                "mean abs. rate difference",
                "median",
                "90 %",
                "99 %",
                "max",
            ],
        )
        + f"\nTolerance used by `tests/test_regression.py` on machines other than the reference's: "
        f"{summary.get('tolerance')} ({summary.get('tolerance_note', '')}).\n\nPer run: `runs.csv`; per "
        "(run, suspect): `deltas.csv`.\n"
    )
    atomic_write_bytes(out / "README.md", text.encode())


def _reference_converged(ref: Path, seed: int) -> dict:
    import csv

    p = ref / "sweep.csv"
    if not p.exists():
        return {}
    with open(p) as fh:
        return {
            run_key(
                r["method"], r["strategy"], None if r["setting"] in ("", "None") else float(r["setting"]), seed
            ): int(r["n_converged"])
            for r in csv.DictReader(fh)
        }


if __name__ == "__main__":
    sys.exit(main())
