"""``ipguard verify``: suspects (model files, zoo folders, prediction APIs) against a fingerprint; the work is
:func:`ipguard_tf.verification.suspects.verify_suspects`, this module reads the options and prints the table."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from ipguard_tf.cli.common import check_out_file, command_line, nonneg_int, notice, number, positive_int
from ipguard_tf.core import constants as C
from ipguard_tf.core.calibration import format_p
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.io.files import format_table

log = logging.getLogger("ipguard_tf")


def add_parser(sub: Any) -> None:
    v = sub.add_parser("verify", help="verify suspects against a fingerprint")
    v.add_argument("--fingerprint", required=True, help="fingerprint file from 'ipguard extract'")
    v.add_argument(
        "--suspect",
        action="append",
        default=[],
        help="suspect model, or a zoo folder (all its suspects, with R/U/ARUC); repeatable",
    )
    v.add_argument(
        "--suspect-url",
        action="append",
        default=[],
        metavar="URL",
        help="suspect behind a prediction API: http(s)://HOST/v1/models/NAME (TensorFlow Serving) or "
        "/v2/models/NAME (Open Inference Protocol: KServe, Triton, MLServer); repeatable",
    )
    v.add_argument(
        "--protocol",
        choices=["tfserving", "v2"],
        default=None,
        help="wire protocol of --suspect-url (default: from the URL path)",
    )
    v.add_argument(
        "--output",
        choices=["auto", "labels", "probabilities"],
        default="auto",
        help="what the API answers per point: a class label, or a row of class scores (default auto: either, checked)",
    )
    v.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="points per request to a --suspect-url (default 32) or per local batch",
    )
    v.add_argument("--timeout", type=number(0.0, strict=True), default=None, help="seconds per request (default 30)")
    v.add_argument(
        "--retries",
        type=nonneg_int,
        default=None,
        help="retries after a timeout, dropped connection, HTTP 429 or 5xx (default 5)",
    )
    v.add_argument(
        "--max-rps", type=number(0.0, strict=True), default=None, help="at most this many requests per second"
    )
    v.add_argument(
        "--query-budget",
        type=nonneg_int,
        default=None,
        help="at most this many points sent to each --suspect-url (every attempt counts)",
    )
    v.add_argument(
        "--progress-file",
        default=None,
        help="where answers to a --suspect-url are saved while it runs, for resuming (default: beside "
        "the fingerprint; removed when complete)",
    )
    v.add_argument("--data-dir", help="dataset folder, for zoo members rebuilt on demand")
    v.add_argument(
        "--weights",
        default="imagenet",
        help="for imagenet:NAME suspects: 'imagenet', a folder of weight files, or none",
    )
    v.add_argument(
        "--converged-only",
        action="store_true",
        help="verify on the fingerprint's converged points only (the paper's searches all converged)",
    )
    v.add_argument(
        "--threshold",
        type=number(0.0, 1.0),
        default=None,
        help=f"threshold of the fingerprint's statistic for the verdict (default: the statistic's, "
        f"{C.DEFAULT_THRESHOLD} for the matching rate, {C.SAC_DEFAULT_THRESHOLD} for SAC's distance)",
    )
    v.add_argument(
        "--input-scale",
        type=number(0.0, strict=True),
        default=None,
        help="multiply [0,1] points by this before the suspect (default: the fingerprint's, else 1)",
    )
    v.add_argument(
        "--layout",
        choices=["auto", "NHWC", "NCHW"],
        default="auto",
        help=".onnx suspects: the input layout the model takes; the points are NHWC and are transposed for an NCHW "
        "model (default auto: from the model's input dimensions, an error when both would fit)",
    )
    v.add_argument("--json", action="store_true", help="print JSON instead of a table")
    v.add_argument(
        "--no-rebuild",
        action="store_true",
        help="zoo suspects: skip members whose file is absent instead of rebuilding them (see the note "
        "printed before verification starts)",
    )
    v.add_argument(
        "--unsafe",
        action="store_true",
        help="allow suspect files whose loading runs code (Keras Lambda layers, pickles, skops files with "
        "foreign types); off by default: a suspect is someone else's file",
    )
    v.add_argument(
        "--report",
        default=None,
        metavar="HTML",
        help="also write a self-contained HTML ownership report (hashes, settings, every suspect's "
        "statistic, CI, p-value and verdict, plots)",
    )


def run(args: argparse.Namespace) -> int:
    # TensorFlow and the layers that need it are imported here, not at the top: --help stays instant
    from ipguard_tf.evaluation.ownership import write_ownership_report
    from ipguard_tf.io.fingerprint_file import load_fingerprint
    from ipguard_tf.models import remote as R
    from ipguard_tf.verification.remote import default_progress_path
    from ipguard_tf.verification.suspects import verify_suspects

    if args.report:
        check_out_file(args.report, "--report")
    if not args.suspect and not args.suspect_url:
        raise ParameterError("verify needs at least one --suspect or --suspect-url")
    if args.progress_file and len(args.suspect_url) > 1:
        raise ParameterError("--progress-file names one file; give it with a single --suspect-url")
    if args.layout != "auto" and not any(Path(s).suffix.lower() == ".onnx" for s in args.suspect):
        raise ParameterError(f"--layout {args.layout} applies to .onnx suspects only, and none is given")
    fp = load_fingerprint(args.fingerprint)
    if args.converged_only:
        n_all = len(fp)
        fp = fp.converged_only()
        log.info("verifying on the %d converged points of %d (--converged-only)", len(fp), n_all)
    given = fp.metadata.get("input_scale") if args.input_scale is None else args.input_scale
    scale = 1.0 if given is None else given  # checked when the file was read (core.fingerprint.check_metadata)
    shape = fp.metadata.get("input_shape") or list(fp.x.shape[1:])
    if any(d is None for d in shape):
        shape = list(fp.x.shape[1:])
    remote = [
        R.RemoteSuspect(
            url,
            num_classes=fp.metadata.get("num_classes"),
            input_shape=tuple(shape),
            input_scale=scale,
            protocol=args.protocol,
            output=args.output,
            batch_size=args.batch_size or R.DEFAULT_REMOTE_BATCH,
            timeout=args.timeout or R.DEFAULT_TIMEOUT,
            retries=R.DEFAULT_RETRIES if args.retries is None else args.retries,
            max_rps=args.max_rps,
            query_budget=args.query_budget,
        )
        for url in args.suspect_url
    ]

    def progress_path(s: R.RemoteSuspect) -> Path:
        return Path(args.progress_file) if args.progress_file else default_progress_path(args.fingerprint, s.endpoint)

    rep = verify_suspects(
        fp,
        remote + list(args.suspect),
        threshold=args.threshold,
        batch_size=args.batch_size,
        input_scale=scale,
        weights=args.weights,
        unsafe=args.unsafe,
        data_dir=args.data_dir,
        rebuild=not args.no_rebuild,
        progress_path=progress_path,
        progress=not args.quiet,
        notice=notice,
        layout=args.layout,
    )
    if args.report:
        write_ownership_report(
            args.report,
            fp,
            rep.results,
            rep.roles,
            calibration=rep.calibration,
            summary=rep.summary,
            command=command_line(args),
            threshold_source=rep.threshold_source,
        )
        log.info("wrote the ownership report %s", args.report)
    print_report(rep, as_json=args.json)
    return 0


def print_report(rep: Any, as_json: bool = False) -> None:
    """The verification of every suspect as a table (or JSON), with the threshold's source, the calibration and
    the zoo summary."""
    results, roles, summary, cal = rep.results, rep.roles, rep.summary, rep.calibration
    if as_json:
        rows = [dict(r.as_dict(), **({"role": role} if role else {})) for r, role in zip(results, roles)]
        print(json.dumps(rows if summary is None else {"suspects": rows, "summary": summary}, indent=2))
        return
    rows = [dict(r.as_dict(), role=role or "") for r, role in zip(results, roles)]
    cols = [("suspect", "suspect", "{}")] + ([("role", "role", "{}")] if any(roles) else [])
    stat = rep.statistic
    fmt = "{:.2f}" if stat.name == "matching_rate" else "{:.4f}"
    for r in rows:
        if r.get("ci95_low") is not None:
            r["ci"] = f"[{r['ci95_low']:.2f}, {r['ci95_high']:.2f}]"
    ci = [("95% CI (Clopper-Pearson)", "ci", "{}")] if any(r.get("ci") for r in rows) else []
    pv = []
    if cal is not None:
        for r in rows:
            r["p"] = format_p(r.get("p_value"))
        pv = [("p-value (H0: independent)", "p", "{}")]
    print(format_table(rows, cols + [(stat.name, "value", fmt)] + ci + pv + [("verdict", "verdict", "{}")]))
    if results:
        print(
            f"threshold {rep.threshold:g}, {rep.threshold_source} ({stat.name} {stat.rule} threshold: verdict 1 = "
            "verified as a copy of the fingerprinted model)"
        )
        if cal is not None:
            print(cal.summary())
            print(
                "this calibration came from inside the fingerprint file: whoever made the file chose its negatives; "
                "a judge re-calibrates with independent models of their own ('ipguard calibrate --negatives DIR')"
            )
            grind = [(r.p_value, r.suspect) for r in results if r.verdict == 1 and r.p_value]
            if grind:
                p, who = min(grind)
                print(
                    f"seed grinding: for an independent model to match as well as {who} does (p = {format_p(p)}), a "
                    f"claimant would try about 1/p = {1 / p:.3g} fingerprints; publish a fingerprint's SHA-256 before "
                    "examining any suspect so that the seed cannot have been chosen afterwards"
                )
        elif stat.name == "matching_rate":
            print(
                "not calibrated: no p-values and no stated false-positive rate; 'ipguard calibrate "
                "--fingerprint F --negatives DIR' gives both"
            )
    if summary:
        print(
            f"positives {summary['n_positive']}, negatives {summary['n_negative']}: robustness "
            f"{summary['robustness']:.2f}, uniqueness {summary['uniqueness']:.2f} at the threshold; "
            f"ARUC {summary['aruc']:.3f}, AUC {summary['auc']:.3f}, gap {summary['gap']:+.2f}"
        )
