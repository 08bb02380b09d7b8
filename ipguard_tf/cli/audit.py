"""``ipguard audit``: is a fingerprint the target's own? Re-derives its starts from the seed, checks every point's
labels and goal, and replays the search for some of its points on the model
(:func:`ipguard_tf.verification.audit.audit`); this module reads the options and prints the judgement.

Exit status: 0 when every audited point is the model's own search result, 3 when the fingerprint is not shown to
be the model's own (a wrong model, foreign points, not replayable, or a model on which the search cannot run), 2
for a user error (a missing or damaged file, missing training data), in one line.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ipguard_tf.cli.common import nonneg_int, number, positive_int
from ipguard_tf.core.errors import DataError
from ipguard_tf.io.data import LOADERS


def add_parser(sub: Any) -> None:
    a = sub.add_parser(
        "audit",
        help="check that a fingerprint's points are the model's own search results (exit 0), not foreign (exit 3)",
        description="Re-derive a fingerprint's starts from its seed, check every point's labels and goal on the "
        "model, and replay the search for --points of them. Exit 0: every audited point is the model's own; 3: "
        "the fingerprint is not shown to be the model's own; 2: a user error.",
    )
    a.add_argument("--fingerprint", required=True, help="fingerprint file (.npz)")
    a.add_argument("--model", required=True, help="the model the fingerprint claims to be of: .keras, .h5, SavedModel")
    a.add_argument(
        "--points",
        type=positive_int,
        default=None,
        metavar="M",
        help="replay M points drawn at random (default all); every point's labels and goal are checked regardless",
    )
    a.add_argument(
        "--seed-for-sample",
        type=nonneg_int,
        default=None,
        metavar="S",
        help="seed of the draw of the --points to replay (default: fresh, printed; the judge's choice, not the "
        "claimant's)",
    )
    a.add_argument(
        "--dataset",
        default=None,
        choices=list(LOADERS),
        help="the training data the starts were drawn from (fingerprints with training-example starts; default: "
        "the dataset the fingerprint names, when it is one of these)",
    )
    a.add_argument("--data", default=None, help="the owner's training examples: an .npz with x[, y] or a folder")
    a.add_argument("--data-dir", help="folder with the dataset files")
    a.add_argument(
        "--trust-calibration",
        action="store_true",
        help="state the calibration inside the file (by default ignored: its negatives are the claimant's)",
    )
    a.add_argument(
        "--strict",
        action="store_true",
        help="replay every point in its original batches and accept identical replays only (for a judge on the "
        "platform the fingerprint was made on)",
    )
    a.add_argument(
        "--tolerance",
        type=number(0.0),
        default=None,
        metavar="REL",
        help="largest distance of a stored point from its replay, as a fraction of the search length (default 1.0 for "
        "starts at training examples, 0.1 for uniform starts: what rounding on other hardware was measured to need, "
        "see docs/defending.md)",
    )
    a.add_argument("--weights", default="imagenet", help="for imagenet:NAME models: 'imagenet', a folder, or none")
    a.add_argument("--unsafe", action="store_true", help="allow model files whose loading runs code")
    a.add_argument("--json", action="store_true", help="print JSON instead of the judgement")


def _training_data(args: argparse.Namespace, fp: Any, shape: Any):
    """(x, y) the starts were drawn from, when the fingerprint's starts are training examples; else (None, None)."""
    from ipguard_tf.io.data import load_dataset
    from ipguard_tf.io.imagenet_data import load_imagenet_images
    from ipguard_tf.io.owner_data import load_owner_data

    starts = fp.metadata.get("starts")
    if not isinstance(starts, dict) or starts.get("kind") != "data":
        return None, None
    seed = (fp.metadata.get("params") or {}).get("seed", 0)
    if args.data:
        ds = load_owner_data(args.data, input_shape=shape, data_dir=args.data_dir, seed=seed)
        return ds.x_train, ds.y_train
    name = args.dataset or fp.metadata.get("dataset")
    if name not in LOADERS:
        raise DataError(
            f"the fingerprint's starts were drawn from a training array of {starts.get('data_len')} examples "
            f"({fp.metadata.get('dataset') or 'unnamed'}): give it with --data or --dataset"
        )
    if name == "imagenet":
        if not args.data_dir:
            raise DataError("--dataset imagenet needs --data-dir (the ImageNet train folder the starts came from)")
        return load_imagenet_images(args.data_dir, len(fp), seed), None
    ds = load_dataset(name, args.data_dir)
    return ds.x_train, ds.y_train


def run(args: argparse.Namespace) -> int:
    # TensorFlow and the layers that need it are imported here, not at the top: --help stays instant
    from ipguard_tf.io.fingerprint_file import load_fingerprint
    from ipguard_tf.verification.audit import audit
    from ipguard_tf.verification.suspects import resolve_model

    fp = load_fingerprint(args.fingerprint)
    scale = fp.metadata.get("input_scale") or 1.0
    model = resolve_model(args.model, weights=args.weights, input_scale=scale, unsafe=args.unsafe)
    train_x, train_y = _training_data(args, fp, getattr(model, "input_shape", None))
    rep = audit(
        fp,
        model,
        points=args.points,
        train_x=train_x,
        train_y=train_y,
        sample_seed=args.seed_for_sample,
        trust_calibration=args.trust_calibration,
        strict=args.strict,
        rel_tol=args.tolerance,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(dict(rep.as_dict(), fingerprint=args.fingerprint, sha256=fp.sha256), indent=2))
    else:
        print(f"audit of {args.fingerprint} (content SHA-256 {fp.sha256}) against {args.model}")
        for line in rep.lines():
            print(line)
    return rep.exit_code
