"""Progress bars for long work: tqdm on stderr, quiet when stderr is not a terminal unless forced."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    env = os.environ.get("LLMCTL_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, total: float | None = None, desc: str = "",
             unit: str = "it", **kw):
    """A tqdm bar (with ETA) over `iterable`; disabled off-terminal so logs and CI stay clean."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not progress_enabled(),
                dynamic_ncols=True, file=sys.stderr, **kw)
