"""``ipguard zoo build | list``: suspect zoos (:mod:`ipguard_tf.zoo`)."""

from __future__ import annotations

import argparse
from typing import Any

from ipguard_tf.cli.common import nonneg_int, number, positive_int, subparsers
from ipguard_tf.core.errors import ParameterError
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
        choices=["quick", "paper", "full"],
        help="ipguard quick: 10 same-architecture negatives, 3 LeNet-5, 3 VGG16, 10 forests; paper: "
        "50/10/10/10. sac quick: 3 student families, 1 seed, 10 irrelevant models, epochs scaled; paper: SAC's "
        "counts; full: SACBench's counts (30 irrelevant, 10 fine-tuned, 10 fine-pruned, 20 transfer, 20 of each "
        "extraction) at SAC's epochs, for a cluster or GPU machine (the cost is printed before it starts)",
    )
    zb.add_argument("--data-dir", help="folder with the dataset files")
    zb.add_argument("--out", required=True, help="zoo folder (created; resumed if it exists)")
    zb.add_argument(
        "--rebuild-stale",
        action="store_true",
        help="rebuild the members recorded with other parameters than the profile plans now (a recipe changed "
        "since they were built) and those made from them; without it such a zoo is an error",
    )
    zb.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="build on Ray, one task per member: alone, a Ray started on this machine for the build; with ADDRESS "
        "('auto', HOST:PORT, ray://HOST:10001), a running cluster (the zoo folder and --data-dir on a file system "
        "every node shares). Needs pip install 'ray>=2.40,<3'",
    )
    zb.add_argument("--ray-cpus", type=positive_int, help="--ray alone: CPUs the local Ray may use (default: all)")
    zb.add_argument(
        "--ray-cpus-per-member",
        type=number(0, strict=True),
        default=1.0,
        help="CPUs each member's task declares, and TensorFlow's threads in it (default 1)",
    )
    zb.add_argument(
        "--ray-gpus-per-member", type=number(0), default=0.0, help="GPUs each member's task declares (default 0)"
    )
    zb.add_argument(
        "--ray-retries",
        type=nonneg_int,
        default=3,
        help="retries of a member whose Ray worker died (a member's exception is not retried; default 3)",
    )
    zl = zsub.add_parser(
        "list",
        help="print a zoo's Table 2 (accuracies; a SAC zoo: every member with its "
        "accuracy, agreement with the source and queries)",
    )
    zl.add_argument("zoo", help="zoo folder")


def sac_cost_line(builder: Any) -> str:
    """What a SAC zoo build will make and about how long it takes (printed before it starts, issue 32)."""
    from ipguard_tf.zoo.sac import estimate_seconds

    builder.start()
    todo = builder.pending()
    hours = estimate_seconds(builder.profile, [(m.name, m.info, m.suffix) for m in todo]) / 3600
    return (
        f"SAC zoo, profile {builder.profile.name}: {len(builder.planned())} members, {len(todo)} to build; about "
        f"{hours:.1f} CPU-hours on the project's 2-core CPU (estimate from per-epoch timings; measured builds took "
        "0.15 to 1.4 times it; a GPU or a Ray cluster divides it)"
    )


def run(args: argparse.Namespace) -> int:
    # TensorFlow and the layers that need it are imported here, not at the top: --help stays instant
    from ipguard_tf.zoo.builder import PROFILES, ZooBuilder
    from ipguard_tf.zoo.sac import SAC_PROFILES, SACZooBuilder, sac_rows
    from ipguard_tf.zoo.store import read_manifest, table2_rows

    if args.zoo_command == "build":
        ray_flags = [
            f"--ray-{name}"
            for name, given in (
                ("cpus", args.ray_cpus is not None),
                ("cpus-per-member", args.ray_cpus_per_member != 1.0),
                ("gpus-per-member", args.ray_gpus_per_member != 0.0),
                ("retries", args.ray_retries != 3),
            )
            if given
        ]
        if ray_flags and args.ray is None:
            raise ParameterError(f"{', '.join(ray_flags)} needs --ray")
        if args.ray_cpus is not None and args.ray != "local":
            raise ParameterError("--ray-cpus is for a local Ray (--ray alone); a cluster at an address has its own")
        if args.kind != "sac" and args.profile not in PROFILES:
            raise ParameterError(f"--profile {args.profile} is a SAC zoo profile (--kind sac)")
        if args.kind == "sac":
            builder: Any = SACZooBuilder(
                args.dataset,
                args.out,
                SAC_PROFILES[args.profile],
                data_dir=args.data_dir,
                verbose=0 if args.quiet else 1,
                rebuild_stale=args.rebuild_stale,
            )
        else:
            builder = ZooBuilder(
                args.dataset,
                args.out,
                PROFILES[args.profile],
                data_dir=args.data_dir,
                verbose=0 if args.quiet else 1,
                weights=args.weights,
                rebuild_stale=args.rebuild_stale,
            )
        if args.kind == "sac" and not args.quiet:
            print(sac_cost_line(builder), flush=True)
        if args.ray is None:
            m = builder.build()
        else:
            from ipguard_tf.zoo.parallel import RayOptions, build_on_ray

            def done(rec: dict, timing: dict) -> None:
                if not args.quiet:
                    print(
                        f"zoo {args.out}: {rec['name']} ({rec['family']}, accuracy {rec['test_accuracy']:.4f}, "
                        f"{timing['seconds'].get(rec['name'], 0.0):.1f} s on {timing['host']})",
                        flush=True,
                    )

            options = RayOptions(
                address=None if args.ray == "local" else args.ray,
                num_cpus=args.ray_cpus,
                cpus_per_member=args.ray_cpus_per_member,
                gpus_per_member=args.ray_gpus_per_member,
                max_retries=args.ray_retries,
            )
            m = build_on_ray(builder, options, on_member=done)
        what = "pruning levels rejected" if args.kind != "sac" else "stolen models rejected under the accuracy floor"
        rejected = f" ({len(m.get('rejected', []))} {what})" if m.get("rejected") or args.kind != "sac" else ""
        print(f"zoo {args.out}: {len(m['models'])} models{rejected}")
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
