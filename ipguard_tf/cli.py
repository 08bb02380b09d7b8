"""The ``ipguard`` command: ``extract``, ``calibrate``, ``verify``, ``zoo``, ``protect`` (anti-piracy models,
:mod:`ipguard_tf.protect.cli`) and ``demo``.

Errors a user can cause (bad arguments, missing or corrupt files, wrong shapes: every
:class:`~ipguard_tf.errors.IPGuardError`, and file-system errors) print one line on stderr and exit with status
2. Anything else is a bug: it prints one line saying so and exits with status 1; ``--debug`` shows the traceback
instead. ``--method`` and its hyperparameter options come from the method registry
(:mod:`ipguard_tf.registry`). Heavy imports (TensorFlow) happen only after the arguments have been parsed, so
``--help`` and argument errors are immediate.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from . import constants as C
from . import registry
from .data import LOADERS
from .io_utils import format_table

log = logging.getLogger("ipguard_tf")

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 1


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are a single line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int(minimum: int):
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
        return v

    return parse


_positive_int = _int(1)
_nonneg_int = _int(0)


def _float(lo: Optional[float] = None, hi: Optional[float] = None, strict: bool = False):
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
        if not math.isfinite(v) or (lo is not None and (v <= lo if strict else v < lo)) or (hi is not None and v > hi):
            rng = f"{'>' if strict else '>='} {lo}" if lo is not None else ""
            rng += f" and <= {hi}" if hi is not None else ""
            raise argparse.ArgumentTypeError(f"expected a finite number {rng.strip()}, got {s!r}")
        return v

    return parse


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
        return _int(int(lo) + (1 if strict else 0))
    return _float(lo, hi, strict)


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
            parts.append(f"{who}{text} (default " + "; ".join(f"{d} for {', '.join(n)}" for d, n in
                                                               defaults.items()) + ")")
    return "; ".join(parts)


def _flag_dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _add_method_options(e: argparse.ArgumentParser) -> None:
    """``--method`` and one option per hyperparameter flag of the registered methods."""
    e.add_argument("--method", default="ipguard", choices=registry.names(),
                   help="fingerprinting method (default ipguard): " + "; ".join(
                       f"{s.name}: {s.summary}" for s in registry.specs()))
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


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ipguard", description="IPGuard fingerprinting of Keras classifiers (Cao, Jia, Gong, AsiaCCS 2021).")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    datasets = list(LOADERS)

    e = sub.add_parser("extract", help="extract a fingerprint from a target model")
    e.add_argument("--model", required=True,
                   help="target model: .keras, .h5, SavedModel folder, or imagenet:NAME (Keras Applications)")
    e.add_argument("--weights", default="imagenet",
                   help="for imagenet:NAME models: 'imagenet' (Keras download/cache), a folder of weight files, or none")
    e.add_argument("--dataset", default="fashion_mnist", choices=datasets,
                   help="training data for the T initialisation and the input domain (default fashion_mnist)")
    e.add_argument("--data-dir", help="folder with the dataset files (Fashion-MNIST IDX files)")
    _add_method_options(e)
    e.add_argument("--n", type=_positive_int, default=C.N_POINTS, help=f"number of points (default {C.N_POINTS})")
    e.add_argument("--input-scale", type=_float(0.0, strict=True), default=1.0,
                   help="multiply [0,1] inputs by this before the model (e.g. 255)")
    e.add_argument("--mirrored", action="store_true",
                   help="spread the points over all GPUs with tf.distribute.MirroredStrategy")
    e.add_argument("--out", required=True, help="fingerprint file to write (.npz)")
    e.add_argument("--unsafe", action="store_true",
                   help="allow model files whose loading runs code (Keras Lambda layers, pickles); off by default")
    e.add_argument("--checkpoint", default=None,
                   help="file where the search state is saved while it runs; a re-run after an interruption resumes "
                        "from it and gives the same fingerprint (default OUT.checkpoint.npz; removed when done)")
    e.add_argument("--checkpoint-every", type=_float(0.0), default=60.0, metavar="SECONDS",
                   help="seconds between checkpoint saves (default 60; 0: after every graph call)")
    e.add_argument("--no-checkpoint", action="store_true", help="do not save or resume a checkpoint")

    v = sub.add_parser("verify", help="verify suspects against a fingerprint")
    v.add_argument("--fingerprint", required=True, help="fingerprint file from 'ipguard extract'")
    v.add_argument("--suspect", action="append", default=[],
                   help="suspect model, or a zoo folder (all its suspects, with R/U/ARUC); repeatable")
    v.add_argument("--suspect-url", action="append", default=[], metavar="URL",
                   help="suspect behind a prediction API: http(s)://HOST/v1/models/NAME (TensorFlow Serving) or "
                        "/v2/models/NAME (Open Inference Protocol: KServe, Triton, MLServer); repeatable")
    v.add_argument("--protocol", choices=["tfserving", "v2"], default=None,
                   help="wire protocol of --suspect-url (default: from the URL path)")
    v.add_argument("--output", choices=["auto", "labels", "probabilities"], default="auto",
                   help="what the API answers per point: a class label, or a row of class scores (default auto: "
                        "either, checked)")
    v.add_argument("--batch-size", type=_positive_int, default=None,
                   help="points per request to a --suspect-url (default 32) or per local batch")
    v.add_argument("--timeout", type=_float(0.0, strict=True), default=None, help="seconds per request (default 30)")
    v.add_argument("--retries", type=_nonneg_int, default=None,
                   help="retries after a timeout, dropped connection, HTTP 429 or 5xx (default 5)")
    v.add_argument("--max-rps", type=_float(0.0, strict=True), default=None, help="at most this many requests per second")
    v.add_argument("--query-budget", type=_nonneg_int, default=None,
                   help="at most this many points sent to each --suspect-url (every attempt counts)")
    v.add_argument("--progress-file", default=None,
                   help="where answers to a --suspect-url are saved while it runs, for resuming (default: beside "
                        "the fingerprint; removed when complete)")
    v.add_argument("--data-dir", help="dataset folder, for zoo members rebuilt on demand")
    v.add_argument("--weights", default="imagenet",
                   help="for imagenet:NAME suspects: 'imagenet', a folder of weight files, or none")
    v.add_argument("--converged-only", action="store_true",
                   help="verify on the fingerprint's converged points only (the paper's searches all converged)")
    v.add_argument("--threshold", type=_float(0.0, 1.0), default=None,
                   help=f"threshold of the fingerprint's statistic for the verdict (default: the statistic's, "
                        f"{C.DEFAULT_THRESHOLD} for the matching rate, {C.SAC_DEFAULT_THRESHOLD} for SAC's distance)")
    v.add_argument("--input-scale", type=_float(0.0, strict=True), default=None,
                   help="multiply [0,1] points by this before the suspect (default: the fingerprint's, else 1)")
    v.add_argument("--json", action="store_true", help="print JSON instead of a table")
    v.add_argument("--no-rebuild", action="store_true",
                   help="zoo suspects: skip members whose file is absent instead of rebuilding them (see the note "
                        "printed before verification starts)")
    v.add_argument("--unsafe", action="store_true",
                   help="allow suspect files whose loading runs code (Keras Lambda layers, pickles, skops files with "
                        "foreign types); off by default: a suspect is someone else's file")

    v.add_argument("--report", default=None, metavar="HTML",
                   help="also write a self-contained HTML ownership report (hashes, settings, every suspect's "
                        "statistic, CI, p-value and verdict, plots)")

    c = sub.add_parser("calibrate", help="calibrate a fingerprint's threshold on independent models (negatives)")
    c.add_argument("--fingerprint", required=True, help="fingerprint file from 'ipguard extract'")
    c.add_argument("--negatives", required=True, action="append", metavar="DIR",
                   help="a zoo (its negatives are used) or a folder of model files trained without the target "
                        "(repeatable)")
    c.add_argument("--fpr", type=_float(0.0, 0.5, strict=True), default=C.CALIBRATION_FPR,
                   help=f"false-positive rate the threshold is set at (default {C.CALIBRATION_FPR})")
    c.add_argument("--out", default=None, help="write the calibrated fingerprint here (default: replace the input "
                                               "file, atomically)")
    c.add_argument("--data-dir", help="dataset folder, for zoo members rebuilt on demand")
    c.add_argument("--batch-size", type=_positive_int, default=None)
    c.add_argument("--no-rebuild", action="store_true", help="skip zoo negatives whose files are absent")
    c.add_argument("--unsafe", action="store_true", help="allow model files that can run code (Lambda layers)")

    z = sub.add_parser("zoo", help="build or list a suspect zoo")
    zsub = z.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", parser_class=_Parser)
    zsub.required = True
    zb = zsub.add_parser("build", help="build (or resume building) a zoo")
    zb.add_argument("--dataset", default="fashion_mnist", choices=datasets)
    zb.add_argument("--weights", default="imagenet",
                    help="ImageNet: pretrained weights ('imagenet' or a folder of Keras weight files)")
    zb.add_argument("--kind", default="ipguard", choices=["ipguard", "sac"],
                    help="ipguard: the IPGuard paper's zoo (post-processed targets, independent negatives); sac: the "
                         "SAC Fashion-MNIST zoo (extraction, fine-tuning, pruning, transfer, quantized, irrelevant)")
    zb.add_argument("--profile", default="quick", choices=["quick", "paper"],
                    help="ipguard quick: 10 same-architecture negatives, 3 LeNet-5, 3 VGG16, 10 forests; paper: "
                         "50/10/10/10. sac quick: 3 student families, 1 seed, epochs scaled; paper: SAC's counts")
    zb.add_argument("--data-dir", help="folder with the dataset files")
    zb.add_argument("--out", required=True, help="zoo folder (created; resumed if it exists)")
    zl = zsub.add_parser("list", help="print a zoo's Table 2 (accuracies; a SAC zoo: every member with its "
                                      "accuracy, agreement with the source and queries)")
    zl.add_argument("zoo", help="zoo folder")

    from .protect.cli import add_parser as add_protect_parser

    add_protect_parser(sub)

    d = sub.add_parser("demo", help="end-to-end Fashion-MNIST demo")
    d.add_argument("--workdir", default=None, help="cache for the demo's suspects (default ~/.cache/ipguard_tf/demo)")
    d.add_argument("--pretrained", default=None, help="pretrained/ folder (default: the repository's)")
    d.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    d.add_argument("--seed", type=_nonneg_int, default=0)
    return p


# ----------------------------------------------------------------------------------------------------------------
def method_params(args: argparse.Namespace) -> dict:
    """The hyperparameters given on the command line for ``args.method`` (flags left out take the method's
    defaults); a flag that belongs to other methods only is a :class:`ParameterError`."""
    from .errors import ParameterError

    spec = registry.get(args.method)
    params = {}
    for flag, pairs in registry.cli_flags().items():
        value = getattr(args, _flag_dest(flag))
        if value is None:
            continue
        mine = [p for s, p in pairs if s is spec]
        if not mine:
            raise ParameterError(f"{flag} does not apply to --method {spec.name} (it is a parameter of "
                                 f"{', '.join(s.name for s, _ in pairs)})")
        params[mine[0].name] = value
    return params


def cmd_extract(args) -> int:
    from .fingerprint import save_fingerprint

    spec = registry.get(args.method)
    params = method_params(args)
    init = params.get("init", spec.defaults().get("init", "T"))  # SAC has no init: the owner's data
    if spec.task_agnostic:  # TAFA: the raw model (any task), no data
        from .models import load_model_file

        clf, train_x, train_y = load_model_file(args.model, unsafe=args.unsafe), None, None
    else:
        clf = _resolve_model(args.model, args.weights, args.input_scale, args.unsafe)
        train_x, train_y = _training_data(args, params, init)
    method = registry.build(args.method, progress=not args.quiet, distribute=_mirrored() if args.mirrored else None,
                            **params)
    ckpt = None if args.no_checkpoint else (args.checkpoint or f"{args.out}.checkpoint.npz")
    fp = method.generate(clf, args.n, train_x, train_y=train_y,
                         dataset=None if spec.task_agnostic else args.dataset, checkpoint=ckpt,
                         checkpoint_every=args.checkpoint_every)
    fp.metadata["command"] = "ipguard " + " ".join(args.argv)
    fp.metadata["input_scale"] = args.input_scale
    digest = save_fingerprint(fp, args.out)
    if ckpt is not None:
        Path(ckpt).unlink(missing_ok=True)
    print(f"wrote {args.out}: {len(fp)} points ({fp.n_converged} converged), method {args.method}"
          f"{'' if method.strategy == '-' else '-' + method.strategy}, "
          f"{fp.metadata['seconds']:.1f} s, sha256 {digest[:16]}")
    return 0


def _training_data(args, params: dict, init: str):
    """The training images (and labels) ``extract`` starts from with ``init`` T (None otherwise); for ImageNet a
    sample of the train folder, and the ImageNet batch size unless one was given (``params`` is updated)."""
    from .data import load_dataset
    from .errors import ParameterError

    if args.dataset == "imagenet":
        from .imagenet import IMAGENET_BATCH, load_imagenet_images

        if init == "T" and not args.data_dir:
            raise ParameterError("--dataset imagenet with --init T needs --data-dir (an ImageNet train folder)")
        params.setdefault("batch_size", IMAGENET_BATCH)
        return (load_imagenet_images(args.data_dir, args.n, params.get("seed", 0)) if init == "T" else None), None
    ds = load_dataset(args.dataset, args.data_dir) if init == "T" else None
    return (ds.x_train, ds.y_train) if ds is not None else (None, None)


def _mirrored():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy()
    log.info("MirroredStrategy over %d replica(s): %s", strategy.num_replicas_in_sync,
             ", ".join(strategy.extended.worker_devices))
    return strategy


def _resolve_model(spec: str, weights: str, input_scale: float, unsafe: bool = False):
    """A model argument: ``imagenet:NAME`` (Keras Applications, see ipguard_tf.imagenet) or a file/folder."""
    from .imagenet import as_imagenet_classifier, parse_model_spec
    from .models import as_classifier

    name = parse_model_spec(spec)
    if name is not None:
        return as_imagenet_classifier(name, None if weights.lower() == "none" else weights)
    return as_classifier(spec, input_scale=input_scale, unsafe=unsafe)


def cmd_verify(args) -> int:
    from .errors import ParameterError
    from .calibration import calibration_of, format_p
    from .fingerprint import load_fingerprint
    from .verification import statistic_of, verify
    from .zoo.builder import is_zoo

    if not args.suspect and not args.suspect_url:
        raise ParameterError("verify needs at least one --suspect or --suspect-url")
    if args.progress_file and len(args.suspect_url) > 1:
        raise ParameterError("--progress-file names one file; give it with a single --suspect-url")
    fp = load_fingerprint(args.fingerprint)
    if args.converged_only:
        n_all = len(fp)
        fp = fp.converged_only()
        log.info("verifying on the %d converged points of %d (--converged-only)", len(fp), n_all)
    if args.input_scale is None:
        args.input_scale = float(fp.metadata.get("input_scale") or 1.0)
    cal = calibration_of(fp)
    if args.threshold is not None:
        threshold_source = "given (--threshold)"
    elif cal is not None:
        if cal.threshold > 1:
            raise ParameterError(f"the calibration gives no threshold on these {cal.n} points at FPR {cal.fpr}; "
                                 "give --threshold")
        args.threshold = cal.threshold
        threshold_source = f"calibrated at false-positive rate {cal.fpr:g}"
    else:
        threshold_source = "the documented default (no calibration)"
    results, roles = [], []
    for url in args.suspect_url:
        results.append(_verify_url(args, fp, url))
        roles.append(None)
    for s in args.suspect:
        if is_zoo(s):
            from .zoo.builder import ENSEMBLE_ROLES, load_member, members, missing_members, rebuild_note

            missing = missing_members(s)
            absent = {r["name"] for r in missing}
            if absent and args.no_rebuild:
                sys.stderr.write(f"ipguard: {s}: {len(absent)} absent members skipped (--no-rebuild): "
                                 f"{', '.join(sorted(absent))}\n")
            elif absent:
                sys.stderr.write(f"ipguard: {rebuild_note(Path(s), missing)}; --no-rebuild skips them\n")
            for rec in members(s):
                if (args.no_rebuild and rec["name"] in absent) or rec["role"] in ENSEMBLE_ROLES:
                    continue  # (CAE's own ensemble is no suspect)
                if rec.get("labels") and not statistic_of(fp).needs_scores:
                    # another label set (transfer): a matching rate cannot compare it; SAC's distance can
                    log.warning("%s/%s skipped: it labels %s, not the fingerprint's classes", s.rstrip("/"),
                                rec["name"], rec["labels"])
                    continue
                model = load_member(s, rec["name"], data_dir=args.data_dir)
                r = verify(fp, model, args.threshold, name=f"{s.rstrip('/')}/{rec['name']}",
                           input_scale=args.input_scale, batch_size=args.batch_size)
                results.append(r)
                roles.append(rec["role"])
                del model
        elif statistic_of(fp).task_agnostic:  # TAFA: the suspect's raw outputs, whatever its task
            from .models import load_model_file

            results.append(verify(fp, load_model_file(s, unsafe=args.unsafe), args.threshold, name=s,
                                  batch_size=args.batch_size))
            roles.append(None)
        else:
            clf = _resolve_model(s, args.weights, args.input_scale, args.unsafe)
            results.append(verify(fp, clf, args.threshold, name=s, batch_size=args.batch_size))
            roles.append(None)
            del clf
    if cal is not None:
        from dataclasses import replace

        results = [replace(r, p_value=cal.p_value(r.matches, r.n)) if r.matches is not None else r for r in results]
    summary = _zoo_summary(results, roles)
    if args.report:
        from .ownership import write_ownership_report

        write_ownership_report(args.report, fp, results, roles, calibration=cal, summary=summary,
                               command="ipguard " + " ".join(args.argv), threshold_source=threshold_source)
        log.info("wrote the ownership report %s", args.report)
    if args.json:
        rows = [dict(r.as_dict(), **({"role": role} if role else {})) for r, role in zip(results, roles)]
        print(json.dumps(rows if summary is None else {"suspects": rows, "summary": summary}, indent=2))
    else:
        rows = [dict(r.as_dict(), role=role or "") for r, role in zip(results, roles)]
        cols = [("suspect", "suspect", "{}")] + ([("role", "role", "{}")] if any(roles) else [])
        stat = results[0].statistic if results else "matching_rate"
        fmt = "{:.2f}" if stat == "matching_rate" else "{:.4f}"
        for r in rows:
            if r.get("ci95_low") is not None:
                r["ci"] = f"[{r['ci95_low']:.2f}, {r['ci95_high']:.2f}]"
        ci = [("95% CI (Clopper-Pearson)", "ci", "{}")] if any(r.get("ci") for r in rows) else []
        pv = []
        if cal is not None:
            for r in rows:
                r["p"] = format_p(r.get("p_value"))
            pv = [("p-value (H0: independent)", "p", "{}")]
        print(format_table(rows, cols + [(stat, "value", fmt)] + ci + pv + [("verdict", "verdict", "{}")]))
        if results:
            rule = ">=" if registry.STATISTICS[stat].higher_is_copy else "<="
            print(f"threshold {results[0].threshold:g}, {threshold_source} ({stat} {rule} threshold: verdict 1 = "
                  "verified as a copy of the fingerprinted model)")
            if cal is not None:
                print(cal.summary())
            elif stat == "matching_rate":
                print("not calibrated: no p-values and no stated false-positive rate; 'ipguard calibrate "
                      "--fingerprint F --negatives DIR' gives both")
        if summary:
            print(f"positives {summary['n_positive']}, negatives {summary['n_negative']}: robustness "
                  f"{summary['robustness']:.2f}, uniqueness {summary['uniqueness']:.2f} at the threshold; "
                  f"ARUC {summary['aruc']:.3f}, AUC {summary['auc']:.3f}, gap {summary['gap']:+.2f}")
    return 0


_MODEL_SUFFIXES = (".keras", ".h5", ".tflite", ".skops")


def _negative_models(folder: str, args):
    """(name, model) of each negative in ``folder``: a zoo's role-negative members (rebuilt with notice when
    absent, unless --no-rebuild), or each model file / SavedModel folder in a plain folder (loaded lazily)."""
    from .errors import ParameterError
    from .zoo.builder import is_zoo, load_member, members, missing_members, rebuild_note

    root = Path(folder)
    if is_zoo(folder):
        miss = [r for r in missing_members(folder) if r["role"] == "negative"]
        absent = {r["name"] for r in miss}
        if absent and args.no_rebuild:
            sys.stderr.write(f"ipguard: {folder}: {len(absent)} absent negatives skipped (--no-rebuild)\n")
        elif absent:
            sys.stderr.write(f"ipguard: {rebuild_note(root, miss)}; --no-rebuild skips them\n")
        for rec in members(folder):
            if rec["role"] == "negative" and not (args.no_rebuild and rec["name"] in absent):
                yield f"{folder.rstrip('/')}/{rec['name']}", load_member(folder, rec["name"], data_dir=args.data_dir)
        return
    if not root.is_dir():
        raise ParameterError(f"--negatives {folder}: not a folder")
    found = sorted(p for p in root.iterdir() if p.suffix in _MODEL_SUFFIXES or (p / "saved_model.pb").exists())
    if not found:
        raise ParameterError(f"--negatives {folder}: neither a zoo nor a folder with model files "
                             f"({', '.join(_MODEL_SUFFIXES)} or SavedModel folders)")
    for p in found:
        yield str(p), _resolve_model(str(p), "none", 1.0, args.unsafe)


def cmd_calibrate(args) -> int:
    from .calibration import calibrate, with_calibration
    from .errors import ParameterError
    from .fingerprint import load_fingerprint, save_fingerprint

    fp = load_fingerprint(args.fingerprint)
    items = [item for folder in args.negatives for item in _negative_models(folder, args)]
    cal = calibrate(fp, items, fpr=args.fpr, source=", ".join(args.negatives), batch_size=args.batch_size,
                    progress=not args.quiet)
    if cal.threshold > 1:
        raise ParameterError(f"with {cal.n} points no matching rate has a p-value <= {args.fpr} under the null "
                             f"fitted to these negatives (mean agreement {cal.rates.mean():.2f}); use more points "
                             "or a larger --fpr")
    out = args.out or args.fingerprint
    calibrated = with_calibration(fp, cal)
    calibrated.metadata["calibration"]["command"] = "ipguard " + " ".join(args.argv)
    digest = save_fingerprint(calibrated, out)
    print(cal.summary())
    print(f"wrote {out}: sha256 {digest[:16]} (the calibration is part of the checked metadata)")
    return 0


def _verify_url(args, fp, url: str):
    """Verify one suspect behind a prediction API (see ipguard_tf.remote)."""
    from . import remote as R

    shape = fp.metadata.get("input_shape") or list(fp.x.shape[1:])
    if any(d is None for d in shape):
        shape = list(fp.x.shape[1:])
    suspect = R.RemoteSuspect(
        url, num_classes=fp.metadata.get("num_classes"), input_shape=tuple(shape), input_scale=args.input_scale,
        protocol=args.protocol, output=args.output, batch_size=args.batch_size or R.DEFAULT_REMOTE_BATCH,
        timeout=args.timeout or R.DEFAULT_TIMEOUT, retries=R.DEFAULT_RETRIES if args.retries is None else args.retries,
        max_rps=args.max_rps, query_budget=args.query_budget)
    path = Path(args.progress_file) if args.progress_file else R.default_progress_path(args.fingerprint, suspect.endpoint)
    return R.verify_remote(fp, suspect, args.threshold, progress_path=path, name=url, progress=not args.quiet)


def _zoo_summary(results, roles):
    """Robustness/uniqueness at the threshold, ARUC, AUC and gap over the zoo's positives and negatives."""
    from . import metrics

    from .registry import STATISTICS

    pos = [r.value for r, role in zip(results, roles) if role == "positive"]
    neg = [r.value for r, role in zip(results, roles) if role == "negative"]
    if not pos or not neg:
        return None
    return metrics.summary(pos, neg, results[0].threshold,
                           higher_is_copy=STATISTICS[results[0].statistic].higher_is_copy)


def cmd_zoo(args) -> int:
    from .zoo.builder import PROFILES, ZooBuilder, table2_rows

    if args.zoo_command == "build":
        if args.kind == "sac":
            from .zoo.sac import SAC_PROFILES, SACZooBuilder

            m = SACZooBuilder(args.dataset, args.out, SAC_PROFILES[args.profile], data_dir=args.data_dir,
                              verbose=0 if args.quiet else 1).build()
            print(f"zoo {args.out}: {len(m['models'])} models")
            return 0
        m = ZooBuilder(args.dataset, args.out, PROFILES[args.profile], data_dir=args.data_dir,
                       verbose=0 if args.quiet else 1, weights=args.weights).build()
        print(f"zoo {args.out}: {len(m['models'])} models ({len(m.get('rejected', []))} pruning levels rejected)")
        return 0
    from .zoo.builder import read_manifest

    if read_manifest(args.zoo).get("kind") == "sac":
        from .zoo.sac import sac_rows

        print(format_table(sac_rows(args.zoo), [(c, c, "{}") for c in ("name", "role", "family", "architecture",
                                                                        "accuracy", "agreement", "queries")]))
        return 0
    rows = table2_rows(args.zoo)
    print(format_table(rows, [("type", "type", "{}"), ("classifier", "classifier", "{}"), ("detail", "detail", "{}"),
                        ("test accuracy", "accuracy", "{}"), ("models", "count", "{}")]))
    return 0


def cmd_protect(args) -> int:
    from .protect.cli import run

    return run(args)


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(workdir=args.workdir, pretrained=args.pretrained, data_dir=args.data_dir, seed=args.seed,
                    progress=not args.quiet)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO),
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    if args.quiet:
        os.environ["IPGUARD_NO_PROGRESS"] = "1"
    from .errors import IPGuardError

    try:
        if not args.debug:
            _quiet_tensorflow()
        return {"extract": cmd_extract, "calibrate": cmd_calibrate, "verify": cmd_verify, "zoo": cmd_zoo,
                "demo": cmd_demo, "protect": cmd_protect}[args.command](args)
    except KeyboardInterrupt:
        sys.stderr.write("ipguard: interrupted\n")
        return 130
    except (IPGuardError, OSError) as exc:  # the user's mistake, or the file system's
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(f"ipguard: error: {msg}\n")
        return EXIT_USER_ERROR
    except Exception as exc:  # a bug: said as such, in one line; --debug shows the traceback
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        sys.stderr.write(f"ipguard: internal error (a bug, please report it): {type(exc).__name__}: {msg[:300]} "
                         "(rerun with --debug for the traceback)\n")
        return EXIT_INTERNAL


def _quiet_tensorflow() -> None:
    """Import TensorFlow with its native start-up chatter (CUDA probing, oneDNN notices) kept off stderr, so
    that an error is the only line a user sees. Nothing about devices is changed."""
    import warnings

    warnings.filterwarnings("ignore")
    if "tensorflow" not in sys.modules:
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        try:
            import tensorflow as tf

            tf.config.list_logical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except Exception:
        pass
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
