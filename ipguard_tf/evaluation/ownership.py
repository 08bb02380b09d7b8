"""The ownership report (issue 16): one self-contained HTML page a model owner can hand over.

It states what was checked and how (the fingerprint's SHA-256 and creation time, the target's weights hash, the
method and its settings, the command), and per suspect the statistic, its 95 % Clopper-Pearson interval, the
p-value under the calibrated null (:mod:`ipguard_tf.core.calibration`) and the verdict at the threshold used; with
plots inlined as PNG data URIs (no file or network access when it is opened): the calibration negatives'
matching rates against each suspect's, and, when a zoo was verified, the robustness / uniqueness curves
(paper Section 5.1.5). Written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ipguard_tf.core import metrics
from ipguard_tf.core.calibration import format_p, smallest_supported_fpr
from ipguard_tf.core.statistics import MATCHING_RATE, STATISTICS
from ipguard_tf.io.env_info import machine, utc_now, versions
from ipguard_tf.io.files import atomic_write_bytes

_CSS = """body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:left}
th{background:#eee}.copy{color:#a00;font-weight:bold}.indep{color:#060}code{font-size:90%}
.note{color:#555;font-size:90%}"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _rate_plot(results, calibration, threshold: float) -> Optional[str]:
    """Negatives' matching rates (calibration) vs each suspect's, with the threshold."""
    rates = [r.value for r in results if r.statistic == "matching_rate"]
    if not rates and calibration is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    bins = np.linspace(0, 1, 41)
    if calibration is not None:
        ax.hist(calibration.rates, bins=bins, color="#8a8", label=f"calibration negatives ({calibration.k})")
    for i, r in enumerate(results[:30]):
        if r.statistic == "matching_rate":
            ax.axvline(r.value, color="#a33", alpha=0.6, lw=1.5, label="suspects" if i == 0 else None)
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("matching rate")
    ax.set_ylabel("models")
    ax.legend(fontsize=8, loc="upper center")
    return _png(fig)


def _ru_plot(results, roles) -> Optional[str]:
    pos, neg = metrics.by_role([(r.value, role) for r, role in zip(results, roles)])
    if not pos or not neg:
        return None
    higher = STATISTICS[results[0].statistic].higher_is_copy
    taus, R, U = metrics.ru_curves(pos, neg, higher_is_copy=higher)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(taus, R, label="robustness")
    ax.plot(taus, U, label="uniqueness")
    ax.set_xlabel("threshold")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    return _png(fig)


def _row(r, role: Optional[str]) -> str:

    ci = f"[{r.ci[0]:.3f}, {r.ci[1]:.3f}]" if r.ci is not None else "-"
    val = f"{r.value:.3f}" if r.statistic == "matching_rate" else f"{r.value:.4f}"
    cls, word = ("copy", "verified as a copy") if r.verdict else ("indep", "not verified")
    matches = f"{r.matches}/{r.n}" if r.matches is not None else f"n = {r.n}"
    cells = [
        html.escape(r.suspect),
        html.escape(role or ""),
        matches,
        val,
        ci,
        format_p(r.p_value),
        f'<span class="{cls}">{word}</span>',
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def ownership_html(
    fingerprint: Any,
    results: Sequence[Any],
    roles: Sequence[Optional[str]],
    *,
    calibration: Any = None,
    summary: Optional[Dict[str, Any]] = None,
    command: str = "",
    threshold_source: str = "",
    notes: Sequence[str] = (),
) -> str:
    """The report as one HTML string (see the module docstring); ``notes`` are paragraphs shown after the
    calibration (e.g. how the setting was chosen)."""

    meta = fingerprint.metadata
    target = meta.get("target") or {}
    threshold = results[0].threshold if results else float("nan")
    esc = html.escape
    settings = {
        k: meta.get(k)
        for k in ("method", "strategy", "statistic", "dataset", "n", "n_converged", "points", "params")
        if meta.get(k) is not None
    }
    facts = [
        (
            "Fingerprint SHA-256",
            f"<code>{esc(str(fingerprint.sha256 or 'not read from a file'))}</code> (publish it, as a dated public "
            "record, before any suspect is examined: a fingerprint fixed in advance cannot have been chosen, among "
            "many seeds, to fit a suspect)",
        ),
        ("Fingerprint created", esc(str(meta.get("created", "unknown")))),
        ("Fingerprint command", f"<code>{esc(str(meta.get('command', 'unknown')))}</code>"),
        ("Target model", esc(str(target.get("source") or target.get("name") or "unknown"))),
        ("Target weights SHA-256", f"<code>{esc(str(target.get('weights_sha256', 'unknown')))}</code>"),
        ("Method and settings", f"<code>{esc(json.dumps(settings, sort_keys=True, default=str))}</code>"),
        ("Points verified", f"{len(fingerprint)}"),
        ("Threshold", f"{threshold:.4g} ({esc(threshold_source or 'source not stated')})"),
        ("Verification command", f"<code>{esc(command)}</code>"),
        ("Report written", f"{esc(utc_now())} on {esc(json.dumps(machine(), default=str))}"),
        ("Library versions", f"<code>{esc(json.dumps(versions(), sort_keys=True))}</code>"),
    ]
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Ownership report</title>"
        f"<style>{_CSS}</style></head><body>",
        "<h1>Model ownership report</h1>",
        f"<p>{html.escape(STATISTICS.get(meta.get('statistic'), MATCHING_RATE).explanation, quote=False)}</p>",
        "<h2>What was checked</h2><table>",
        *[f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts],
        "</table>",
    ]
    if calibration is not None:
        parts += [
            "<h2>Calibration (null: independently trained models)</h2>",
            f"<p>{esc(calibration.summary())}. Null model: {esc(calibration.to_metadata()['null_model'])}; "
            "a p-value is the probability that an independently trained model matches at least as many "
            "points.</p>",
        ]
        n_neg = len(calibration.negatives)
        floor = smallest_supported_fpr(n_neg)
        parts.append(
            f"<p>With {n_neg} negatives, the smallest false-positive rate the negatives themselves can "
            f"support is {floor:.3g} (the 95 % upper bound on independent models' match rate when none of them "
            f"matches, about 3/n). "
            + (
                f"The threshold's rate {calibration.fpr:g} is below it: it rests on the fitted null's tail; more "
                f"negatives (about {int(np.ceil(3 / calibration.fpr))}) would let observed models vouch for it."
                if calibration.fpr < floor
                else f"The threshold's rate {calibration.fpr:g} is within it."
            )
            + "</p>"
        )
    else:
        parts += [
            "<p class='note'>No calibration: p-values and a false-positive bound are not available; the "
            "threshold is the one given or the documented default (<code>ipguard calibrate</code> adds "
            "both).</p>"
        ]
    if notes:
        parts += ["<h2>Notes</h2>", *[f"<p>{esc(n)}</p>" for n in notes]]
    parts += [
        "<h2>Suspects</h2><table><tr><th>suspect</th><th>role</th><th>matches</th>"
        f"<th>{esc(results[0].statistic if results else 'statistic')}</th><th>95% CI (Clopper-Pearson)</th>"
        "<th>p-value</th><th>verdict</th></tr>",
        *[_row(r, role) for r, role in zip(results, roles)],
        "</table>",
    ]
    if summary:
        parts.append(
            f"<p>Zoo: {summary['n_positive']} positives, {summary['n_negative']} negatives; robustness "
            f"{summary['robustness']:.2f} and uniqueness {summary['uniqueness']:.2f} at the threshold; "
            f"ARUC {summary['aruc']:.3f}, AUC {summary['auc']:.3f}.</p>"
        )
    plot = _rate_plot(results, calibration, threshold)
    if plot:
        parts.append(
            f"<h2>Matching rates</h2><img alt='matching rates of the negatives and the suspects' src='{plot}'>"
        )
    ru = _ru_plot(results, roles)
    if ru:
        parts.append(f"<h2>Robustness and uniqueness</h2><img alt='robustness and uniqueness curves' src='{ru}'>")
    parts.append(
        "<p class='note'>Written by ipguard_tf. The fingerprint file's SHA-256 covers its points and "
        "metadata (including the calibration); recomputing it on the file handed over checks that it is "
        "the one this report describes.</p></body></html>"
    )
    return "\n".join(parts)


def write_ownership_report(
    path: str, fingerprint: Any, results: Sequence[Any], roles: Sequence[Optional[str]], **kw: Any
) -> None:
    """Write :func:`ownership_html` to ``path`` atomically."""
    atomic_write_bytes(Path(path), ownership_html(fingerprint, list(results), list(roles), **kw).encode("utf-8"))


__all__: List[str] = ["ownership_html", "write_ownership_report"]
