"""How long a new user waits (issue 16): a fresh clone's ``ipguard verify --suspect pretrained/fashion_mnist``.

    python experiments/fresh_clone_verify.py [--out experiments/results/fresh_clone_verify]

Clones this repository's committed HEAD into a temporary folder (so git-ignored members, the random forests, are
absent as on any new machine), then, with the clone's own code (``PYTHONPATH`` = the clone), times

1. ``ipguard extract`` of an IPGuard fingerprint of the committed target (the defaults: -TL, k = 1, n = 100), and
2. ``ipguard verify --fingerprint fp.npz --suspect <clone>/pretrained/fashion_mnist``: every positive and
   negative of the zoo, rebuilding the absent members first (with the one-line notice it prints),

each as a subprocess, wall-clock. Writes ``results.json``, ``README.md`` and ``run.json`` (versions, machine).
The clone is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ipguard_tf.io.files import atomic_write_bytes, run_record, write_json  # noqa: E402

LIMIT_MINUTES = 10  # issue 16's bar


def _timed(argv, env, cwd):
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "fresh_clone_verify"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = dict(os.environ, PYTHONPATH=str(clone), TF_CPP_MIN_LOG_LEVEL="2", IPGUARD_NO_PROGRESS="1")
        cli = [sys.executable, "-c", "import sys; from ipguard_tf.cli import main; sys.exit(main())"]
        zoo = clone / "pretrained" / "fashion_mnist"
        ignored = (zoo / ".gitignore").read_text().splitlines() if (zoo / ".gitignore").exists() else []
        absent = sorted(f for f in ignored if f and not f.startswith("#") and not (zoo / f).exists())
        fp = Path(tmp) / "fp.npz"
        t_extract, p1 = _timed(
            cli + ["extract", "--model", str(zoo / "target.keras"), "--out", str(fp), "--no-checkpoint"], env, clone
        )
        if p1.returncode != 0:
            sys.stderr.write(p1.stderr[-2000:])
            return 1
        t_verify, p2 = _timed(cli + ["verify", "--fingerprint", str(fp), "--suspect", str(zoo)], env, clone)
        if p2.returncode != 0:
            sys.stderr.write(p2.stderr[-2000:])
            return 1
    notice = [line for line in p2.stderr.splitlines() if "rebuilt before use" in line]
    res = {
        "commit": head,
        "absent_in_clone": absent,
        "extract_seconds": round(t_extract, 1),
        "verify_seconds": round(t_verify, 1),
        "limit_minutes": LIMIT_MINUTES,
        "within_limit": t_verify <= LIMIT_MINUTES * 60,
        "rebuild_notice": notice,
        "verify_output_tail": p2.stdout.strip().splitlines()[-3:],
    }
    write_json(out / "results.json", res)
    write_json(out / "run.json", run_record({"out": str(out)}))
    readme = (
        "# A fresh clone's zoo verification (issue 16)\n\n"
        "Made by `python experiments/fresh_clone_verify.py` (versions and machine in `run.json`), on commit "
        f"`{head[:12]}`: a `git clone` of the repository, its own code, no cached model.\n\n"
        f"* Absent in the clone (git-ignored, rebuilt by verify): {len(absent)} files "
        f"({', '.join(absent) or 'none'}).\n"
        f"* `ipguard extract --model pretrained/fashion_mnist/target.keras --out fp.npz`: {t_extract:.0f} s.\n"
        f"* `ipguard verify --fingerprint fp.npz --suspect pretrained/fashion_mnist`: **{t_verify:.0f} s** "
        f"({t_verify / 60:.1f} min; the bar is {LIMIT_MINUTES} min: "
        f"{'within it' if res['within_limit'] else 'NOT within it'}).\n"
        f"* Its notice: `{notice[0] if notice else 'none printed'}`\n"
        "* Its last lines:\n\n```\n" + "\n".join(res["verify_output_tail"]) + "\n```\n"
    )
    atomic_write_bytes(out / "README.md", readme.encode())
    print(readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
