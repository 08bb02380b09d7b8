"""``ipguard zoo build | list``: suspect zoos (:mod:`ipguard_tf.zoo`)."""

from __future__ import annotations

import argparse
from typing import Any

from ipguard_tf.cli.common import subparsers
from ipguard_tf.io.data import LOADERS
from ipguard_tf.io.files import format_table


def add_parser(sub: Any) -> None:
    z = sub.add_parser("zoo", help="build or list a suspect zoo")
    zsub = subparsers(z, "zoo_command", "ZOO_COMMAND")
    zb = zsub.add_parser("build", help="build (or resume building) a zoo")
    zb.add_argument("--dataset", default="fashion_mnist", choices=list(LOADERS))
    zb.add_argument(
        "--weights",
        default="imagenet",
        help="ImageNet: pretrained weights ('imagenet' or a folder of Keras weight files)",
    )
    zb.add_argument(
        "--kind",
        default="ipguard",
        choices=["ipguard", "sac"],
        help="ipguard: the IPGuard paper's zoo (post-processed targets, independent negatives); sac: the "
        "SAC Fashion-MNIST zoo (extraction, fine-tuning, pruning, transfer, quantized, irrelevant)",
    )
    zb.add_argument(
        "--profile",
        default="quick",
        choices=["quick", "paper"],
        help="ipguard quick: 10 same-architecture negatives, 3 LeNet-5, 3 VGG16, 10 forests; paper: "
        "50/10/10/10. sac quick: 3 student families, 1 seed, epochs scaled; paper: SAC's counts",
    )
    zb.add_argument("--data-dir", help="folder with the dataset files")
    zb.add_argument("--out", required=True, help="zoo folder (created; resumed if it exists)")
    zl = zsub.add_parser(
        "list",
        help="print a zoo's Table 2 (accuracies; a SAC zoo: every member with its "
        "accuracy, agreement with the source and queries)",
    )
    zl.add_argument("zoo", help="zoo folder")


def run(args: argparse.Namespace) -> int:
    # TensorFlow and the layers that need it are imported here, not at the top: --help stays instant
    from ipguard_tf.zoo.builder import PROFILES, ZooBuilder
    from ipguard_tf.zoo.sac import SAC_PROFILES, SACZooBuilder, sac_rows
    from ipguard_tf.zoo.store import read_manifest, table2_rows

    if args.zoo_command == "build":
        if args.kind == "sac":
            m = SACZooBuilder(
                args.dataset,
                args.out,
                SAC_PROFILES[args.profile],
                data_dir=args.data_dir,
                verbose=0 if args.quiet else 1,
            ).build()
            print(f"zoo {args.out}: {len(m['models'])} models")
            return 0
        m = ZooBuilder(
            args.dataset,
            args.out,
            PROFILES[args.profile],
            data_dir=args.data_dir,
            verbose=0 if args.quiet else 1,
            weights=args.weights,
        ).build()
        print(f"zoo {args.out}: {len(m['models'])} models ({len(m.get('rejected', []))} pruning levels rejected)")
        return 0
    if read_manifest(args.zoo).get("kind") == "sac":
        print(
            format_table(
                sac_rows(args.zoo),
                [(c, c, "{}") for c in ("name", "role", "family", "architecture", "accuracy", "agreement", "queries")],
            )
        )
        return 0
    print(
        format_table(
            table2_rows(args.zoo),
            [
                ("type", "type", "{}"),
                ("classifier", "classifier", "{}"),
                ("detail", "detail", "{}"),
                ("test accuracy", "accuracy", "{}"),
                ("models", "count", "{}"),
            ],
        )
    )
    return 0
