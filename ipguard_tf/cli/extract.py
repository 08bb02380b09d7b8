"""``ipguard extract``: a fingerprint of a target model. ``--method`` and its hyperparameter options come from
the method registry (:mod:`ipguard_tf.core.registry`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Sequence, Tuple

from ipguard_tf.cli.common import check_out_file, command_line, int_at_least, notice, number, positive_int
from ipguard_tf.core import constants as C
from ipguard_tf.core import registry
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.io.data import LOADERS, load_dataset

log = logging.getLogger("ipguard_tf")


def _registry_number(pairs: Sequence[Tuple[registry.MethodSpec, registry.Param]]):
    """The argparse type of a hyperparameter flag: its kind, finite, and within the loosest range of the
    methods that share it (each method's constructor then checks its own range)."""
    params = [p for _, p in pairs]
    kind = params[0].kind
    lows = [p.minimum for p in params]
    lo = None if any(v is None for v in lows) else min(lows)
    strict = lo is not None and all(p.strict for p in params if p.minimum == lo)
    highs = [p.maximum for p in params]
    hi = None if any(v is None for v in highs) else max(highs)
    if kind is int:
        if lo is None or hi is not None:
            raise TypeError("integer hyperparameter flags take a minimum and no maximum")
        return int_at_least(int(lo) + (1 if strict else 0))
    return number(lo, hi, strict)


def _registry_help(pairs: Sequence[Tuple[registry.MethodSpec, registry.Param]]) -> str:
    """``help (default D)``, or per method where methods differ in what the flag means or its default."""

    def shown(p: registry.Param) -> str:
        if p.shown is not None:
            return p.shown
        return f"{p.default:g}" if isinstance(p.default, float) else str(p.default)

    groups: dict = {}
    for spec, p in pairs:
        groups.setdefault(p.help, {}).setdefault(shown(p), []).append(spec.display)
    parts = []
    for text, defaults in groups.items():
        who = "" if len(groups) == 1 else " / ".join(n for names in defaults.values() for n in names) + ": "
        if len(defaults) == 1:
            parts.append(f"{who}{text} (default {next(iter(defaults))})")
        else:
            parts.append(
                f"{who}{text} (default " + "; ".join(f"{d} for {', '.join(n)}" for d, n in defaults.items()) + ")"
            )
    return "; ".join(parts)


def _flag_dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_method_options(e: argparse.ArgumentParser) -> None:
    """``--method`` and one option per hyperparameter flag of the registered methods."""
    e.add_argument(
        "--method",
        default="ipguard",
        choices=registry.names(),
        help="fingerprinting method (default ipguard): "
        + "; ".join(f"{s.name}: {s.summary}" for s in registry.specs()),
    )
    for flag, pairs in registry.cli_flags().items():
        p = pairs[0][1]
        kw: dict = {"default": None, "dest": _flag_dest(flag), "help": _registry_help(pairs)}
        if p.kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif p.kind is str:
            if p.choices is not None:
                kw["choices"] = list(p.choices)
            else:
                kw["metavar"] = p.name.upper()
        else:
            kw["type"] = _registry_number(pairs)
        e.add_argument(flag, **kw)


def add_parser(sub: Any) -> None:
    e = sub.add_parser("extract", help="extract a fingerprint from a target model")
    e.add_argument(
        "--model",
        required=True,
        help="target model: .keras, .h5, SavedModel folder, or imagenet:NAME (Keras Applications)",
    )
    e.add_argument(
        "--weights",
        default="imagenet",
        help="for imagenet:NAME models: 'imagenet' (Keras download/cache), a folder of weight files, or none",
    )
    e.add_argument(
        "--dataset",
        default=None,
        choices=list(LOADERS),
        help="training data for the T initialisation (default: fashion_mnist for a 28x28x1 model, imagenet for "
        "imagenet:NAME; for any other model none, and points start uniform: --init R)",
    )
    e.add_argument(
        "--data",
        default=None,
        help="your own training examples instead of --dataset: an .npz with x[, y], a folder of images, or a "
        "dataset name (see ipguard fingerprint --help)",
    )
    e.add_argument("--data-dir", help="folder with the dataset files (Fashion-MNIST IDX files)")
    add_method_options(e)
    e.add_argument("--n", type=positive_int, default=C.N_POINTS, help=f"number of points (default {C.N_POINTS})")
    e.add_argument(
        "--input-scale",
        type=number(0.0, strict=True),
        default=1.0,
        help="multiply [0,1] inputs by this before the model (e.g. 255)",
    )
    e.add_argument(
        "--mirrored", action="store_true", help="spread the points over all GPUs with tf.distribute.MirroredStrategy"
    )
    e.add_argument("--out", required=True, help="fingerprint file to write (.npz)")
    e.add_argument(
        "--unsafe",
        action="store_true",
        help="allow model files whose loading runs code (Keras Lambda layers, pickles); off by default",
    )
    e.add_argument(
        "--checkpoint",
        default=None,
        help="file where the search state is saved while it runs; a re-run after an interruption resumes "
        "from it and gives the same fingerprint (default OUT.checkpoint.npz; removed when done)",
    )
    e.add_argument(
        "--checkpoint-every",
        type=number(0.0),
        default=60.0,
        metavar="SECONDS",
        help="seconds between checkpoint saves (default 60; 0: after every graph call)",
    )
    e.add_argument("--no-checkpoint", action="store_true", help="do not save or resume a checkpoint")


def method_params(args: argparse.Namespace) -> dict:
    """The hyperparameters given on the command line for ``args.method`` (flags left out take the method's
    defaults); a flag that belongs to other methods only is a :class:`ParameterError`."""
    spec = registry.get(args.method)
    params = {}
    for flag, pairs in registry.cli_flags().items():
        value = getattr(args, _flag_dest(flag))
        if value is None:
            continue
        mine = [p for s, p in pairs if s is spec]
        if not mine:
            raise ParameterError(
                f"{flag} does not apply to --method {spec.name} (it is a parameter of "
                f"{', '.join(s.name for s, _ in pairs)})"
            )
        params[mine[0].name] = value
    return params


def run(args: argparse.Namespace) -> int:
    # TensorFlow and the layers that need it are imported here, not at the top: --help stays instant
    from ipguard_tf.io.fingerprint_file import save_fingerprint
    from ipguard_tf.verification.suspects import resolve_model
    from ipguard_tf.zoo.members import method_inputs

    check_out_file(args.out)
    spec = registry.get(args.method)
    params = method_params(args)
    model = resolve_model(
        args.model, weights=args.weights, input_scale=args.input_scale, unsafe=args.unsafe, raw=spec.task_agnostic
    )  # TAFA: the raw model (any task), no data
    if not spec.task_agnostic:
        _choose_dataset(args, spec, params, getattr(model, "input_shape", None))
    init = params.get("init", spec.defaults().get("init", "T"))  # SAC has no init: the owner's data
    train_x, train_y = (None, None) if spec.task_agnostic else _training_data(args, params, init)
    method = registry.build(
        args.method,
        progress=not args.quiet,
        distribute=_mirrored() if args.mirrored else None,
        **params,
        **method_inputs(args.method, params, args.data_dir),
    )
    ckpt = None if args.no_checkpoint else (args.checkpoint or f"{args.out}.checkpoint.npz")
    fp = method.generate(
        model,
        args.n,
        train_x,
        train_y=train_y,
        dataset=None if spec.task_agnostic else args.dataset,
        checkpoint=ckpt,
        checkpoint_every=args.checkpoint_every,
    )
    fp.metadata["command"] = command_line(args)
    fp.metadata["input_scale"] = args.input_scale
    digest = save_fingerprint(fp, args.out)
    if ckpt is not None:
        Path(ckpt).unlink(missing_ok=True)
    print(
        f"wrote {args.out}: {len(fp)} points ({fp.n_converged} converged), method {args.method}"
        f"{'' if method.strategy == '-' else '-' + method.strategy}, "
        f"{fp.metadata['seconds']:.1f} s, sha256 {digest[:16]}"
    )
    return 0


def _choose_dataset(args: argparse.Namespace, spec: registry.MethodSpec, params: dict, shape) -> None:
    """Where the starting points come from when neither --data nor --dataset says: Fashion-MNIST for a model of its
    shape, ImageNet for ``imagenet:NAME``, and for any other model uniform points (``--init R``, with a notice), or
    an error when the method needs training examples (``--init T`` given, or a method without an init)."""
    if args.data or args.dataset:
        return
    if args.model.startswith("imagenet:"):
        args.dataset = "imagenet"
        return
    shape = tuple(shape) if shape is not None else None
    if shape is None or shape == (28, 28, 1):
        args.dataset = "fashion_mnist"
        return
    if params.get("init") == "T" or "init" not in spec.defaults():
        raise ParameterError(
            f"the model's inputs have shape {shape}, not Fashion-MNIST's: give its training examples with --data "
            f"(or --dataset){'' if 'init' not in spec.defaults() else ', or --init R'}"
        )
    params["init"] = "R"
    notice(f"no --data or --dataset for a model of input shape {shape}: points start uniform in [0, 1] (--init R)")


def _training_data(args: argparse.Namespace, params: dict, init: str):
    """The training images (and labels) ``extract`` starts from with ``init`` T (None otherwise); for ImageNet a
    sample of the train folder, and the ImageNet batch size unless one was given (``params`` is updated)."""
    from ipguard_tf.io.imagenet_data import load_imagenet_images
    from ipguard_tf.io.owner_data import load_owner_data
    from ipguard_tf.models.imagenet import IMAGENET_BATCH

    if args.data:
        if init != "T":
            return None, None
        ds = load_owner_data(args.data, data_dir=args.data_dir, seed=params.get("seed", 0))
        args.dataset = ds.name
        return ds.x_train, ds.y_train

    if args.dataset == "imagenet":
        if init == "T" and not args.data_dir:
            raise ParameterError("--dataset imagenet with --init T needs --data-dir (an ImageNet train folder)")
        params.setdefault("batch_size", IMAGENET_BATCH)
        return (load_imagenet_images(args.data_dir, args.n, params.get("seed", 0)) if init == "T" else None), None
    ds = load_dataset(args.dataset, args.data_dir) if init == "T" else None
    return (ds.x_train, ds.y_train) if ds is not None else (None, None)


def _mirrored():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy()
    log.info(
        "MirroredStrategy over %d replica(s): %s",
        strategy.num_replicas_in_sync,
        ", ".join(strategy.extended.worker_devices),
    )
    return strategy
