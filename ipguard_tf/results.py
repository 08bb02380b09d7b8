"""Writing results files that record how they were made (command, config, seed, versions, machine)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

from .env_info import machine, utc_now, versions
from .fingerprint import atomic_write_bytes


def run_record(config: Dict[str, Any]) -> Dict[str, Any]:
    """The provenance block stored beside every result."""
    return {"command": "python " + " ".join(sys.argv) if sys.argv else "", "argv": sys.argv,
            "config": config, "versions": versions(), "machine": machine(), "finished": utc_now()}


def write_csv(path: Path, rows: List[Dict[str, Any]], columns: Sequence[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_bytes(path, buf.getvalue().encode())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())
