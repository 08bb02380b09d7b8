"""How long the zoo members that pretrained/ does not keep take to rebuild (issue 29: what is dropped from
pretrained/ is rebuilt on demand, with a notice saying how long that takes).

    python experiments/time_rebuilds.py --zoo pretrained/fashion_mnist [--write] \\
        [--out experiments/results/rebuild_times]

For every member of the zoo whose file is absent and whose record has no time (no ``build_seconds`` from the
build, no ``rebuild_seconds`` yet), rebuilds it in a scratch copy of the zoo (the manifest, and links to the
files present) with the library's loader, times it (wall-clock) and compares its content SHA-256 with the
recorded one. Writes ``<zoo name>.json`` (times, SHA-256 matches, machine, versions) to ``--out``; with ``--write``
also records ``rebuild_seconds`` and ``rebuild_machine`` in the zoo's manifest, where the rebuild notice
(:func:`ipguard_tf.zoo.store.rebuild_note`) reads them. The scratch copy is removed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ipguard_tf.io.env_info import machine  # noqa: E402
from ipguard_tf.io.files import run_record, write_json  # noqa: E402
from ipguard_tf.models.classifier import content_sha256  # noqa: E402
from ipguard_tf.zoo.members import load_member  # noqa: E402
from ipguard_tf.zoo.store import MANIFEST, missing_members, read_manifest, seconds_of, write_manifest  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", required=True, help="zoo folder (e.g. pretrained/fashion_mnist)")
    ap.add_argument("--out", default="experiments/results/rebuild_times")
    ap.add_argument("--write", action="store_true", help="record the times in the zoo's manifest")
    args = ap.parse_args(argv)
    zoo = Path(args.zoo)
    todo = [r for r in missing_members(zoo) if seconds_of(r) is None]
    where = machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / zoo.name
        scratch.mkdir()
        (scratch / MANIFEST).write_bytes((zoo / MANIFEST).read_bytes())
        for p in zoo.iterdir():
            if p.is_file() and p.name != MANIFEST:
                (scratch / p.name).symlink_to(p.resolve())
        for rec in todo:
            t0 = time.perf_counter()
            model = load_member(scratch, rec["name"])
            seconds = round(time.perf_counter() - t0, 1)
            same = content_sha256(model) == rec.get("content_sha256")
            rows.append({"name": rec["name"], "family": rec["family"], "seconds": seconds, "content_sha256_same": same})
            print(f"{rec['name']}: {seconds:.1f} s, content SHA-256 {'as recorded' if same else 'differs'}", flush=True)
            del model
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{zoo.name}.json", {"zoo": str(zoo), "members": rows, "run": run_record(vars(args))})
    if args.write and rows:
        manifest = read_manifest(zoo)
        measured = {r["name"]: r["seconds"] for r in rows}
        for rec in manifest["models"]:
            if rec["name"] in measured:
                rec["rebuild_seconds"] = measured[rec["name"]]
                rec["rebuild_machine"] = where
        write_manifest(zoo, manifest)
    print(f"{len(rows)} members timed ({sum(r['seconds'] for r in rows) / 60:.1f} min); {out / (zoo.name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
