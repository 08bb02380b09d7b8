"""``ipguard protect train | evaluate | attack``: the anti-piracy workflow on the command line (Chen & Wu 2018).

    ipguard protect train --transform fixed --architecture simple_cnn --out runs/fixed
    ipguard protect evaluate --model runs/fixed/model.keras --key runs/fixed/key.npz
    ipguard protect attack --model runs/fixed/model.keras --key runs/fixed/key.npz --threat input-only

Errors are one line with exit status 2, as for every ``ipguard`` command (:mod:`ipguard_tf.cli.common`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ipguard_tf.cli.common import nonneg_int, number, positive_int, subparsers
from ipguard_tf.core import constants as K
from ipguard_tf.core.checks import check_number
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.io.data import Dataset, load_fashion_mnist

ALPHA, BETA, GAMMA = K.ANTIPIRACY_ALPHA, K.ANTIPIRACY_BETA, K.ANTIPIRACY_GAMMA
SIGMA, P, GENERATOR_FILTERS = K.ANTIPIRACY_SIGMA, K.ANTIPIRACY_P, K.ANTIPIRACY_GENERATOR_FILTERS
INPUT_ONLY_TRIALS, PAIR_TRIALS = K.ANTIPIRACY_INPUT_ONLY_TRIALS, K.ANTIPIRACY_PAIR_TRIALS
PAIR_FRACTIONS, PAIR_EPOCHS = K.ANTIPIRACY_PAIR_FRACTIONS, K.ANTIPIRACY_PAIR_EPOCHS
KINDS = K.ANTIPIRACY_TRANSFORMS
ARCHITECTURES = tuple(K.ANTIPIRACY_EPOCHS)

THREATS = ("direct", "input-only", "pair")


def add_parser(sub: Any) -> None:
    """Add the ``protect`` command and its subcommands to ``sub`` (the ``ipguard`` subparsers)."""
    p = sub.add_parser("protect", help="anti-piracy models (Chen & Wu 2018): train, evaluate, attack")
    psub = subparsers(p, "protect_command", "PROTECT_COMMAND")

    def data_options(q):
        q.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
        q.add_argument(
            "--train-size",
            type=positive_int,
            default=None,
            help="use the first N training images only (a quick look; default all)",
        )
        q.add_argument(
            "--test-size", type=positive_int, default=None, help="use the first N test images only (default all)"
        )

    t = psub.add_parser("train", help="train a protected model (or the baseline) into a folder; resumes")
    t.add_argument(
        "--transform",
        required=True,
        choices=KINDS + ("none",),
        help="anti-piracy transform (none: the baseline, a regular model)",
    )
    t.add_argument("--architecture", default="simple_cnn", choices=ARCHITECTURES)
    t.add_argument("--out", required=True, help="folder for model.keras, key.npz and train.json")
    t.add_argument("--seed", type=nonneg_int, default=0, help="model initialisation and batch order (default 0)")
    t.add_argument(
        "--key",
        type=nonneg_int,
        default=None,
        help="the transform's key (default: a fresh secret one; give one only to reproduce a run)",
    )
    t.add_argument(
        "--epochs", type=positive_int, default=None, help="epochs (default: 8 for simple_cnn, 10 for resnet20)"
    )
    t.add_argument(
        "--alpha",
        type=number(0.0, strict=True),
        default=ALPHA,
        help=f"weight of the cross-entropy on processed inputs (default {ALPHA:g})",
    )
    t.add_argument(
        "--beta",
        type=number(0.0),
        default=BETA,
        help=f"weight of the true-class probability on raw inputs (default {BETA:g})",
    )
    t.add_argument(
        "--gamma",
        type=number(0.0),
        default=GAMMA,
        help=f"weight of the squared distortion ||x_p - x_r||^2 (default {GAMMA:g})",
    )
    t.add_argument(
        "--sigma",
        type=number(0.0, 1.0, strict=True),
        default=SIGMA,
        help=f"fixed/learned: bipolar amplitude (default {SIGMA:g})",
    )
    t.add_argument(
        "--p",
        type=number(0.0, 0.5, strict=True),
        default=P,
        help=f"fixed/learned: probability of each sign (default {P:g})",
    )
    t.add_argument(
        "--filters",
        type=positive_int,
        default=GENERATOR_FILTERS,
        help=f"generator: feature maps of its 5x5 layer (default {GENERATOR_FILTERS})",
    )
    data_options(t)

    e = psub.add_parser("evaluate", help="authorised and unauthorised accuracy and PSNR of a protected model")
    e.add_argument("--model", required=True, help="the protected model file")
    e.add_argument("--key", default=None, help="its key file (none: accuracy on raw inputs only)")
    e.add_argument("--json", action="store_true", help="print JSON")
    data_options(e)

    a = psub.add_parser("attack", help="run a threat against a protected model: direct, input-only, pair")
    a.add_argument("--model", required=True, help="the protected model file")
    a.add_argument("--key", required=True, help="its key file (the pair attack's pairs and the owner's sigma, p)")
    a.add_argument("--threat", required=True, choices=THREATS)
    a.add_argument(
        "--trials",
        type=positive_int,
        default=None,
        help=f"trials (default {INPUT_ONLY_TRIALS} input-only, {PAIR_TRIALS} per pair fraction)",
    )
    a.add_argument(
        "--fractions",
        default=",".join(f"{f:g}" for f in PAIR_FRACTIONS),
        help="pair attack: comma-separated fractions of the training set (default 0.1,0.5,1)",
    )
    a.add_argument(
        "--pair-epochs",
        type=positive_int,
        default=PAIR_EPOCHS,
        help=f"pair attack: epochs of the attacker's module (default {PAIR_EPOCHS})",
    )
    a.add_argument("--seed", type=nonneg_int, default=0)
    a.add_argument("--json", action="store_true", help="print JSON")
    data_options(a)


def _data(args):
    d = load_fashion_mnist(args.data_dir)
    tr, te = args.train_size or len(d.x_train), args.test_size or len(d.x_test)
    return Dataset(d.name, d.x_train[:tr], d.y_train[:tr], d.x_test[:te], d.y_test[:te], d.num_classes)


def _fractions(text: str) -> list:
    try:
        out = [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise ParameterError(f"--fractions must be comma-separated numbers, got {text!r}") from None
    if not out:
        raise ParameterError(f"--fractions must be comma-separated numbers, got {text!r}")
    return [check_number(f, "--fractions", 0.0, 1.0, low_open=True) for f in out]


def run(args: argparse.Namespace) -> int:
    """Carry out ``ipguard protect ...``; returns the exit status."""
    # TensorFlow and the layers that need it are imported here, not at the top: --help stays instant
    from ipguard_tf.protect.api import EPOCHS, evaluate, load_protected, protect
    from ipguard_tf.protect.training import ProtectSettings

    progress = not args.quiet
    if args.protect_command == "train":
        settings = ProtectSettings(
            alpha=args.alpha, beta=args.beta, gamma=args.gamma, epochs=args.epochs or EPOCHS[args.architecture]
        )
        params = (
            {"sigma": args.sigma, "p": args.p}
            if args.transform in ("fixed", "learned")
            else {"filters": args.filters}
            if args.transform == "generator"
            else None
        )
        rec = protect(
            _data(args),
            args.out,
            architecture=args.architecture,
            transform=args.transform,
            seed=args.seed,
            key=args.key,
            settings=settings,
            transform_params=params,
            progress=progress,
        )
        m = rec["metrics"]
        what = (
            f"accuracy {m['authorized']:.4f} (baseline, no transform)"
            if m["psnr"] is None
            else f"authorised accuracy {m['authorized']:.4f}, unauthorised {m['unauthorized']:.4f}, PSNR "
            f"{m['psnr']:.1f} dB"
        )
        print(
            f"{args.out}: {args.architecture} {args.transform}: {what} ({rec['train_seconds_total']:.0f} s of training)"
        )
        return 0
    data = _data(args)
    model, transform, _ = load_protected(args.model, args.key)
    if args.protect_command == "evaluate":
        m = evaluate(model, transform, data)
        if args.json:
            print(json.dumps(m, indent=2))
        else:
            print(
                f"authorised accuracy {m['authorized']:.4f}, unauthorised (raw inputs) {m['unauthorized']:.4f}, "
                f"PSNR {m['psnr']:.1f} dB"
                if transform is not None
                else f"accuracy on raw inputs {m['unauthorized']:.4f} (no key given)"
            )
        return 0
    from ipguard_tf.protect.threats import direct_piracy, input_only_attack, pair_attack

    evaluate(model, transform, data)  # checks the key's input shape against the data before any attack runs
    if args.threat == "direct":
        res: dict = {"threat": "direct", "accuracy": direct_piracy(model, data.x_test, data.y_test)}
        line = f"direct piracy (raw inputs): accuracy {res['accuracy']:.4f}"
    elif args.threat == "input-only":
        params = transform.params()
        sigma, p = params.get("sigma", SIGMA), params.get("p", P)
        res = {
            "threat": "input-only",
            "sigma": sigma,
            "p": p,
            **input_only_attack(
                model,
                data.x_test,
                data.y_test,
                sigma=sigma,
                p=p,
                trials=args.trials or INPUT_ONLY_TRIALS,
                seed=args.seed,
                progress=progress,
            ),
        }
        line = (
            f"input-only attack (bipolar sigma {sigma:g}, p {p:g}, {res['trials']} trials): mean accuracy "
            f"{res['mean']:.4f}, best {res['best']:.4f}"
        )
    else:
        res = {"threat": "pair", "fractions": {}}
        lines = []
        for f in _fractions(args.fractions):
            r = pair_attack(
                model,
                transform,
                data.x_train,
                data.x_test,
                data.y_test,
                fraction=f,
                trials=args.trials or PAIR_TRIALS,
                seed=args.seed,
                epochs=args.pair_epochs,
                progress=progress,
            )
            res["fractions"][f"{f:g}"] = r
            lines.append(
                f"pair attack with {f:.0%} of the pairs ({r['pairs']}, {r['trials']} trials): mean accuracy "
                f"{r['mean']:.4f}, best {r['best']:.4f}"
            )
        line = "\n".join(lines)
    print(json.dumps(res, indent=2) if args.json else line)
    return 0
