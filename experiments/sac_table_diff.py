"""SAC Table 3 before and after a rebuild of the zoo, side by side (issue 31): every (attack, method) row of a
committed ``sac_table3.csv`` at an earlier git revision against the one in the results folder now.

    python experiments/sac_table_diff.py --old-rev 5a98caf --results experiments/results/sac_fashion_mnist \
        --out experiments/results/sac_fashion_mnist/old_vs_new.md

Writes a Markdown table (stolen / irrelevant counts, AUC and verdict, old -> new, and SAC's number) and the same
as ``old_vs_new.csv``; the reasons for each change are written by hand in the folder's NOTES.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipguard_tf.io.files import atomic_write_bytes, markdown_table, write_csv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rows_of(text: str) -> dict:
    return {(r["attack"], r["method"]): r for r in csv.DictReader(io.StringIO(text))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-rev", required=True, help="git revision holding the earlier table")
    ap.add_argument("--results", required=True, help="results folder with the new sac_table3.csv")
    ap.add_argument("--out", required=True, help="Markdown file (a .csv beside it)")
    args = ap.parse_args(argv)
    rel = (Path(args.results) / "sac_table3.csv").resolve().relative_to(ROOT)
    old = rows_of(subprocess.run(["git", "show", f"{args.old_rev}:{rel}"], cwd=ROOT, check=True, capture_output=True,
                                 text=True).stdout)  # fmt: skip
    new = rows_of((Path(args.results) / "sac_table3.csv").read_text())
    keys = list(new) + [k for k in old if k not in new]

    def cell(r, field):
        return "" if r is None or r.get(field) in (None, "", "None") else r[field]

    def num(v):
        return "-" if v == "" else f"{float(v):.2f}"

    out = []
    for k in keys:
        o, n = old.get(k), new.get(k)
        out.append(
            {
                "attack": k[0],
                "method": k[1],
                "old_stolen_irrelevant": f"{cell(o, 'n_positive') or '-'}/{cell(o, 'n_negative') or '-'}",
                "new_stolen_irrelevant": f"{cell(n, 'n_positive') or '-'}/{cell(n, 'n_negative') or '-'}",
                "old_auc": num(cell(o, "auc")),
                "new_auc": num(cell(n, "auc")),
                "sac": num(cell(n or o, "sac")),
                "old_verdict": cell(o, "verdict") or "-",
                "new_verdict": cell(n, "verdict") or "-",
            }
        )
    cols = list(out[0])
    write_csv(Path(args.out).with_suffix(".csv"), out, cols)
    head = [
        "attack",
        "method",
        f"stolen/irrelevant ({args.old_rev})",
        "stolen/irrelevant (now)",
        f"AUC ({args.old_rev})",
        "AUC (now)",
        "SAC",
        f"verdict ({args.old_rev})",
        "verdict (now)",
    ]
    text = (
        f"# SAC Table 3, before and after the rebuild\n\nMade by `python experiments/sac_table_diff.py --old-rev "
        f"{args.old_rev} --results {args.results} --out {args.out}`: the committed table at {args.old_rev} against "
        f"the one in `{args.results}` now. Why each row changed: NOTES.md.\n\n"
        + markdown_table([[r[c] for c in cols] for r in out], head)
        + "\n"
    )
    atomic_write_bytes(Path(args.out), text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
