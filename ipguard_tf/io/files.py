"""General I/O helpers, in one place: atomic writes, results files that record how they were made, and tables
(plain text for the terminal, Markdown for results READMEs). Nothing here imports TensorFlow."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple, Union

from ipguard_tf.io.env_info import machine, platform_key, utc_now, versions

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; when the block succeeds, fsync it and rename it onto ``path``
    (so ``path`` holds either the old or the new content, never half of one); when it fails, delete it. The file
    gets the permissions the user's umask gives a new file (a temporary file is created private, 0600).

    ``suffix`` is the temporary file's ending (some writers, e.g. Keras' ``model.save``, choose the format by
    it). Temporary names start with ``.`` and the target's name, so that a killed writer's leftovers are easy
    to find and never mistaken for a finished file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=str(path.parent))
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: PathLike, obj: Any) -> None:
    """``obj`` as indented, key-sorted JSON, written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_csv(path: PathLike, rows: List[Dict[str, Any]], columns: Sequence[str]) -> None:
    """Rows (dicts) as CSV with the given columns (extra keys ignored), written atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_bytes(path, buf.getvalue().encode())


def run_record(config: Dict[str, Any]) -> Dict[str, Any]:
    """The provenance block stored beside every result: command, config, versions, machine, time."""

    return {
        "command": "python " + " ".join(sys.argv) if sys.argv else "",
        "argv": sys.argv,
        "config": config,
        "versions": versions(),
        "machine": machine(),
        "platform": platform_key(),
        "finished": utc_now(),
    }


#: a column of :func:`format_table`: (heading, key in the row, format string)
Column = Tuple[str, str, str]


def format_table(rows: List[Dict[str, Any]], cols: Sequence[Column]) -> str:
    """A plain-text table (left-aligned columns, a dashed rule under the headings); ``None`` shows as ``-``."""
    heads = [h for h, _, _ in cols]
    cells = [[fmt.format(r[k]) if r.get(k) is not None else "-" for _, k, fmt in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def markdown_table(rows: List[List[Any]], head: List[str]) -> str:
    """A Markdown table; floats with two decimals, ``None`` as ``-``."""

    def cell(v):
        if isinstance(v, float):
            return f"{v:.2f}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
