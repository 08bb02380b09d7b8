"""``ipguard fingerprint``: the owner's path in one command (:func:`ipguard_tf.owner.path.fingerprint_owner_model`):
the input domain from the model and the owner's data, IPGuard's setting tuned on cheap copies of the model (and
negatives, when there are any), calibration and the ownership report."""

from __future__ import annotations

import argparse
from typing import Any, Union

from ipguard_tf.cli.common import check_out_file, command_line, nonneg_int, notice, number, positive_int
from ipguard_tf.core import constants as C
from ipguard_tf.core.errors import ParameterError


def _k(s: str) -> Union[str, float]:
    if s == "auto":
        return s
    value = number(0.0, strict=True)(s)
    return value


def _negatives(s: str) -> Union[int, str]:
    if s.isdigit():
        return positive_int(s)
    return s


def add_parser(sub: Any) -> None:
    f = sub.add_parser(
        "fingerprint",
        help="fingerprint your own model (k tuned to it, negatives, calibration, report)",
    )
    f.add_argument("--model", required=True, help="your Keras model: .keras, .h5 or a SavedModel folder")
    f.add_argument("--out", required=True, help="fingerprint file to write (.npz)")
    f.add_argument(
        "--data",
        default=None,
        help="your examples: an .npz with x[, y] (uint8, or floats in [0, 1]), a folder of images (one sub-folder "
        "per class, or flat without labels), or a dataset name (fashion_mnist, cifar10, cifar100). Without it the "
        "input shape comes from the model and points start uniform (-R); a 28x28x1 model with 10 classes uses "
        "Fashion-MNIST",
    )
    f.add_argument("--data-dir", help="folder with a named dataset's files (Fashion-MNIST IDX files)")
    f.add_argument(
        "--k",
        type=_k,
        default="auto",
        help="IPGuard's margin k, or 'auto' (default): choose k and the label strategy on cheap copies of the model "
        "(pruned 10/30 %%, weight noise, TFLite float16/int8, last layer fine-tuned) and the negatives",
    )
    f.add_argument(
        "--negatives",
        type=_negatives,
        default=None,
        metavar="N|DIR",
        help="N: train N models of your architecture with fresh weights on --data (seeds 1..N, kept in "
        "OUT.negatives/); DIR: a folder of independent models or a zoo. They tune the setting and calibrate the "
        "threshold",
    )
    f.add_argument(
        "--negative-epochs",
        type=positive_int,
        default=C.NEGATIVE_EPOCHS,
        help=f"epochs each trained negative gets (default {C.NEGATIVE_EPOCHS}; Adam 1e-3, batch 128)",
    )
    f.add_argument(
        "--fpr",
        type=number(0.0, 0.5, strict=True),
        default=C.CALIBRATION_FPR,
        help=f"false-positive rate of the calibrated threshold (default {C.CALIBRATION_FPR})",
    )
    f.add_argument("--n", type=positive_int, default=C.N_POINTS, help=f"number of points (default {C.N_POINTS})")
    f.add_argument("--seed", type=nonneg_int, default=0, help="seed of the points, copies and splits (default 0)")
    f.add_argument(
        "--input-scale",
        type=number(0.0, strict=True),
        default=1.0,
        help="multiply [0,1] inputs by this before the model (e.g. 255)",
    )
    f.add_argument("--report", default=None, help="ownership report (.html; default OUT with .html when negatives)")
    f.add_argument("--unsafe", action="store_true", help="allow model files whose loading runs code (Lambda layers)")
    f.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="train --negatives N on Ray, one task per negative (alone: a Ray on this machine; ADDRESS: a running "
        "cluster sharing this folder). Needs pip install 'ray>=2.40,<3'",
    )
    f.add_argument("--ray-cpus", type=int, help="--ray alone: CPUs the local Ray may use (default: all)")


def _ray_options(args: argparse.Namespace):
    """RayOptions for ``--ray``, or None."""
    if args.ray is None:
        if args.ray_cpus is not None:
            raise ParameterError("--ray-cpus needs --ray")
        return None
    if not (isinstance(args.negatives, int) or str(args.negatives).isdigit()):
        raise ParameterError("--ray trains negatives: give --negatives N")
    from ipguard_tf.zoo.parallel import RayOptions

    return RayOptions(address=None if args.ray == "local" else args.ray, num_cpus=args.ray_cpus)


def run(args: argparse.Namespace) -> int:
    # TensorFlow and the layers that need it are imported here, not at the top: --help stays instant
    from ipguard_tf.owner.path import fingerprint_owner_model

    check_out_file(args.out)
    if args.report:
        check_out_file(args.report, "--report")
    result = fingerprint_owner_model(
        args.model,
        args.out,
        data=args.data,
        data_dir=args.data_dir,
        negatives=args.negatives,
        negative_epochs=args.negative_epochs,
        k=args.k,
        n=args.n,
        fpr=args.fpr,
        seed=args.seed,
        input_scale=args.input_scale,
        unsafe=args.unsafe,
        report=args.report,
        progress=not args.quiet,
        notice=notice,
        command=command_line(args),
        ray=_ray_options(args),
    )
    print(result.summary())
    fp = result.fingerprint
    print(
        f"wrote {args.out}: {len(fp)} points ({fp.n_converged} converged), IPGuard -{fp.metadata.get('strategy', '')} "
        f"k={fp.metadata.get('params', {}).get('k', '?')}, sha256 {result.sha256[:16]}"
        + (f"; report {result.report}" if result.report else "")
    )
    return 0
