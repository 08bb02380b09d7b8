"""What CI runs, timed from a clean clone (the suite's counts and timings, with the command that produced them).

    python experiments/time_ci.py [--out experiments/results/suite]

Clones this repository's committed HEAD into a temporary folder and runs ``bash .ci/run`` there as CI does
(``./run lint``, then ``./run test``: the clone's own ``.venv`` is created first), wall-clock. Writes
``results.json`` (the commit, the pytest summary line, passed / failed / skipped counts, the suite's own seconds,
the whole run's seconds and the slowest tests), ``log_tail.txt`` (the run's last 60 lines), ``README.md`` and
``run.json`` (versions, machine). Run it alone
on the machine: other jobs beside it slow the suite down. The clone is removed afterwards.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ipguard_tf.io.files import atomic_write_bytes, run_record, write_json  # noqa: E402

SUMMARY = re.compile(r"^=* ?(?P<line>\d+ (passed|failed)[^\n]*?) in (?P<seconds>[\d.]+)s", re.M)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="experiments/results/suite")
    args = ap.parse_args(argv)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    head = head.strip()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "ipguard_tf"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        t0 = time.perf_counter()
        run = subprocess.run(["bash", ".ci/run"], cwd=clone, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    log = run.stdout + run.stderr
    m = SUMMARY.search(log)
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", m.group("line"))} if m else {}
    slowest = re.findall(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S+)$", log, re.M)[:10]
    res = {
        "commit": head,
        "exit_status": run.returncode,
        "summary": m.group("line") if m else None,
        "counts": counts,
        "suite_seconds": float(m.group("seconds")) if m else None,
        "wall_seconds": round(wall, 1),
        "slowest": [{"seconds": float(s), "phase": p, "test": t} for s, p, t in slowest],
        # pytest's short summary ("FAILED tests/x.py::test - why"): which tests, without rerunning the suite
        "failed_tests": sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", log, re.M))),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suite = res["suite_seconds"] or 0.0
    write_json(out / "results.json", res)
    write_json(out / "run.json", run_record(vars(args)))
    atomic_write_bytes(out / "log_tail.txt", "\n".join(log.splitlines()[-60:]).encode() + b"\n")
    atomic_write_bytes(
        out / "README.md",
        (
            "# The suite from a clean clone\n\n"
            f"`python experiments/time_ci.py` at `{head[:12]}`: `bash .ci/run` (lint, format and type check, then the "
            "tests on two workers) in a fresh clone, its `.venv` created first.\n\n"
            f"* exit status {run.returncode}; {res['summary']}\n"
            + "".join(f"* failed: {t}\n" for t in res["failed_tests"])
            + f"* the suite: {suite:.0f} s ({suite / 60:.1f} min); the whole run "
            f"with the install and the lint: {wall:.0f} s ({wall / 60:.1f} min)\n"
            "* slowest: " + "; ".join(f"{r['test']} {r['seconds']:.0f} s" for r in res["slowest"][:5]) + "\n\n"
            "Machine and versions: `run.json`.\n"
        ).encode(),
    )
    print(f"{res['summary']}; suite {res['suite_seconds']} s, whole run {wall:.0f} s -> {out}")
    if run.returncode != 0:
        sys.stderr.write(log[-4000:])
        sys.stderr.write("".join(f"failed: {t}\n" for t in res["failed_tests"]))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
