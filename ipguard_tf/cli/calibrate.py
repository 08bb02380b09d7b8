"""``ipguard calibrate``: a fingerprint's threshold at a chosen false-positive rate, from independent models
(:func:`ipguard_tf.verification.calibration.calibrate`)."""

from __future__ import annotations

import argparse
from typing import Any

from ipguard_tf.cli.common import check_out_file, command_line, notice, number, positive_int
from ipguard_tf.core import constants as C
from ipguard_tf.core.errors import ParameterError


def add_parser(sub: Any) -> None:
    c = sub.add_parser("calibrate", help="calibrate a fingerprint's threshold on independent models (negatives)")
    c.add_argument("--fingerprint", required=True, help="fingerprint file from 'ipguard extract'")
    c.add_argument(
        "--negatives",
        required=True,
        action="append",
        metavar="DIR",
        help="a zoo (its negatives are used) or a folder of model files trained without the target (repeatable)",
    )
    c.add_argument(
        "--fpr",
        type=number(0.0, 0.5, strict=True),
        default=C.CALIBRATION_FPR,
        help=f"false-positive rate the threshold is set at (default {C.CALIBRATION_FPR})",
    )
    c.add_argument(
        "--out",
        default=None,
        help="write the calibrated fingerprint here (default: replace the input file, atomically)",
    )
    c.add_argument("--data-dir", help="dataset folder, for zoo members rebuilt on demand")
    c.add_argument("--batch-size", type=positive_int, default=None)
    c.add_argument("--no-rebuild", action="store_true", help="skip zoo negatives whose files are absent")
    c.add_argument("--unsafe", action="store_true", help="allow model files that can run code (Lambda layers)")


def run(args: argparse.Namespace) -> int:
    # TensorFlow and the layers that need it are imported here, not at the top: --help stays instant
    from ipguard_tf.core.calibration import with_calibration
    from ipguard_tf.io.fingerprint_file import load_fingerprint, save_fingerprint
    from ipguard_tf.verification.calibration import calibrate, negative_models

    if args.out:
        check_out_file(args.out)
    fp = load_fingerprint(args.fingerprint)
    items = [
        item
        for folder in args.negatives
        for item in negative_models(
            folder, data_dir=args.data_dir, rebuild=not args.no_rebuild, unsafe=args.unsafe, notice=notice
        )
    ]
    cal = calibrate(
        fp, items, fpr=args.fpr, source=", ".join(args.negatives), batch_size=args.batch_size, progress=not args.quiet
    )
    if cal.threshold > 1:
        raise ParameterError(
            f"with {cal.n} points no matching rate has a p-value <= {args.fpr} under the null "
            f"fitted to these negatives (mean agreement {cal.rates.mean():.2f}); use more points "
            "or a larger --fpr"
        )
    out = args.out or args.fingerprint
    calibrated = with_calibration(fp, cal)
    calibrated.metadata["calibration"]["command"] = command_line(args)
    digest = save_fingerprint(calibrated, out)
    print(cal.summary())
    print(f"wrote {out}: sha256 {digest[:16]} (the calibration is part of the checked metadata)")
    return 0
