"""Reproduce the paper's Tables 2, 4-8 and Figures 2-6 on one dataset from a zoo, composing the library.

    python experiments/reproduce.py --config experiments/configs/fashion_mnist.json \
        --out experiments/results/fashion_mnist

Resumable: fingerprints and matching rates are cached under OUT/cache (delete it to start over). After the
sweep, a timing pass generates each method's best-setting fingerprint again, one method after another on an
otherwise idle machine, for Table 8 (the sweep's own times may overlap other work). Writes
sweep.csv, table2.md, table4.{csv,md}, matching_rates.{csv,md} (Tables 5-7), table8.csv, fig2_*.png, fig3-6
*.png, claims.md and run.json (command, config, seed, versions, machine).

``--ray [ADDRESS]`` runs the sweep's points on Ray first, one task per point (``ipguard_tf.evaluation.parallel``);
the tables are then made from the cache exactly as without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipguard_tf.evaluation import report  # noqa: E402
from ipguard_tf.evaluation.parallel import run_on_ray  # noqa: E402
from ipguard_tf.evaluation.sweep import Sweep, load_zoo_suspects, strategies_for  # noqa: E402
from ipguard_tf.io.data import load_dataset  # noqa: E402
from ipguard_tf.io.files import run_record, write_json  # noqa: E402
from ipguard_tf.zoo.members import load_member  # noqa: E402
from ipguard_tf.zoo.parallel import RayOptions  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-dir")
    ap.add_argument("--published", default=str(Path(__file__).parent / "published" / "ipguard_paper.json"))
    ap.add_argument("--published-sac", default=str(Path(__file__).parent / "published" / "sac_appendix.json"))
    ap.add_argument(
        "--cached-only",
        action="store_true",
        help="report only the runs whose fingerprints are already cached; list the others as missing",
    )
    ap.add_argument(
        "--no-timing",
        action="store_true",
        help="skip the timing pass (Table 8 then uses the sweep's own, possibly contended, times)",
    )
    ap.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the sweep's points on Ray, one task per point (alone: a Ray on this machine; ADDRESS: a running "
        "cluster whose nodes share this folder and the zoo); the tables are then made from the cache as without it",
    )
    ap.add_argument("--ray-cpus", type=int, help="--ray alone: CPUs the local Ray may use (default: all)")
    ap.add_argument("--ray-cpus-per-point", type=float, default=1.0, help="CPUs each point's task declares")
    ap.add_argument("--ray-gpus-per-point", type=float, default=0.0, help="GPUs each point's task declares")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    cfg = json.loads(Path(args.config).read_text())
    out = Path(args.out)
    ds = load_dataset(cfg["dataset"], args.data_dir)
    zoo = Path(cfg["zoo"])
    # models of another label set (SAC's transfer rows) are compared only by statistics that can (SAC-m)
    suspects = load_zoo_suspects(zoo, args.data_dir, cfg.get("suspects"), other_label_sets=True)
    train_y = None
    method_data = {}
    if cfg.get("zoo_kind") == "sac":  # the owner's own data: the defender half of the SAC split
        from ipguard_tf.zoo.sac import sac_split

        split = sac_split(ds)
        train_x, train_y = split.defender.x, split.defender.y
        # methods that draw from held-out images, as the official code's SAC-m mixes test images
        method_data = {
            m: (split.test.x, split.test.y) for m, part in cfg.get("method_data", {}).items() if part == "test"
        }
    else:
        train_x, train_y = ds.x_train, ds.y_train
    sweep = Sweep(
        out / "cache",
        load_member(zoo, "target"),
        train_x,
        suspects,
        n=cfg["n"],
        dataset=cfg["dataset"],
        method_params=cfg.get("method_params"),
        train_y=train_y,
        method_data=method_data,
    )
    points = [
        (method, strategy, setting, cfg["seed"])
        for method, grid in cfg["grids"].items()
        for strategy in strategies_for(method, cfg["strategies"])
        for setting in grid
    ]
    if args.ray is not None and not args.cached_only:  # fan the points out; the loop below finds them cached
        options = RayOptions(
            address=None if args.ray == "local" else args.ray,
            num_cpus=args.ray_cpus,
            cpus_per_member=args.ray_cpus_per_point,
            gpus_per_member=args.ray_gpus_per_point,
        )
        run_on_ray(sweep, zoo, points, options, data_dir=args.data_dir)
    runs, missing = [], []
    for method, strategy, setting, seed in points:
        if args.cached_only and not sweep.is_cached(method, strategy, setting, seed):
            missing.append(f"{method}-{strategy} {setting}")
            continue
        r = sweep.run(method, strategy, setting, seed)
        logging.info(
            "%s %s %s: ARUC %.3f, converged %d, %.1f s",
            method,
            strategy,
            setting,
            r["aruc"],
            r["n_converged"],
            r["seconds"] or 0,
        )
        runs.append(r)
    if not args.no_timing:
        # Table 8: each method's best setting generated again, one after another, in this one run
        timing = sweep.time_best(report.best_runs(runs))
        for r in runs:
            if r["key"] in timing:
                r["seconds_timing_pass"] = timing[r["key"]]
    cfg = dict(cfg, missing_runs=missing, timing_pass_points_identical=sweep.reproducible)
    published = json.loads(Path(args.published).read_text())
    published["sac_appendix"] = json.loads(Path(args.published_sac).read_text())
    report.write_all(out, runs, suspects, zoo, cfg, published)
    write_json(out / "run.json", run_record({"config": cfg, "config_file": args.config}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
