"""Progress bars (tqdm on stderr) for anything a person waits for; silent when disabled or not wanted."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kw) -> None:
        pass

    def close(self) -> None:
        pass


@contextlib.contextmanager
def progress_bar(
    total: Optional[int], desc: str = "", enabled: bool = True, unit: str = "it", initial: int = 0
) -> Iterator:
    """A tqdm bar, or a no-op one when ``enabled`` is False or IPGUARD_NO_PROGRESS is set."""
    if not enabled or os.environ.get("IPGUARD_NO_PROGRESS"):
        yield _NullBar()
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, initial=initial)
    try:
        yield bar
    finally:
        bar.close()
