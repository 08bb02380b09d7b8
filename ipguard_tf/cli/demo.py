"""``ipguard demo``: the end-to-end Fashion-MNIST demo (:mod:`ipguard_tf.evaluation.demo`)."""

from __future__ import annotations

import argparse
from typing import Any

from ipguard_tf.cli.common import nonneg_int


def add_parser(sub: Any) -> None:
    d = sub.add_parser("demo", help="end-to-end Fashion-MNIST demo")
    d.add_argument("--workdir", default=None, help="cache for the demo's suspects (default ~/.cache/ipguard_tf/demo)")
    d.add_argument("--pretrained", default=None, help="pretrained/ folder (default: the repository's)")
    d.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    d.add_argument("--seed", type=nonneg_int, default=0)


def run(args: argparse.Namespace) -> int:
    # TensorFlow is imported here, not at the top: --help stays instant
    from ipguard_tf.evaluation.demo import run_demo

    return run_demo(
        workdir=args.workdir,
        pretrained=args.pretrained,
        data_dir=args.data_dir,
        seed=args.seed,
        progress=not args.quiet,
    )
