"""The `local` executor: shards in a pool of `--workers` processes on this machine (in-process for one).

`--workers N` means the same in every command: at most N shards run at once, each in its own `spawn`ed process
(tokenizers' thread pool and tqdm's monitor thread make `fork` unsafe). The parent shows one progress bar fed
by a shared counter that stages bump through `pipeline.report_progress`.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any, Callable

from llmctl.core.errors import UserError

from ..pipeline import _init_worker, mp_context
from .base import Executor


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, workers: int = 1, **_: Any):
        if workers < 1:
            raise UserError(f"--workers must be >= 1, got {workers}")
        self.workers = workers

    def map(self, fn: Callable[..., Any], calls: list[tuple], desc: str, resources: dict[str, Any]) -> list[Any]:
        if self.workers <= 1 or len(calls) <= 1:
            return [fn(*args) for args in calls]
        from llmctl.core.progress import progress

        ctx = mp_context()
        counter = ctx.Value("q", 0)
        with ProcessPoolExecutor(
            max_workers=min(self.workers, len(calls)), mp_context=ctx, initializer=_init_worker, initargs=(counter,)
        ) as pool:
            futures = [pool.submit(fn, *args) for args in calls]
            bar = progress(desc=desc, unit="docs")
            try:
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, timeout=0.1, return_when=FIRST_EXCEPTION)
                    bar.n = counter.value
                    bar.refresh()
                    failed = [f for f in done if f.exception() is not None]
                    if failed:  # stop queued shards; running ones finish (and leave their markers)
                        for f in pending:
                            f.cancel()
                        raise failed[0].exception()
                    time.sleep(0)
            finally:
                bar.close()
            return [f.result() for f in futures]
