"""Auto-restart: run the training in a child process and, when it crashes (non-zero exit or a signal), run it
again resuming from the latest checkpoint, up to N times (llm-zero2all's monitor_process, in-tree).

A user error (exit 2) or Ctrl-C is not a crash: restarting would fail the same way or go against the user.
Torch-free: the supervisor only waits.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Callable

from ..errors import UserError

USER_ERROR = UserError.exit_code
INTERRUPTED = (130, -signal.SIGINT)


def child_command(config: str, overrides: list[str], resume: str | None, stop_at_step: int | None) -> list[str]:
    """`python -m llmctl.core.train ...`: the same run, in a fresh interpreter."""
    cmd = [sys.executable, "-m", "llmctl.core.train", "--config", config]
    for item in overrides:
        cmd += ["--set", item]
    if resume:
        cmd += ["--resume", resume]
    if stop_at_step is not None:
        cmd += ["--stop-at-step", str(stop_at_step)]
    return cmd


def supervise(config: str, overrides: list[str], *, resume: str | None, stop_at_step: int | None,
              restarts: int, on_restart: Callable[[int, int], None]) -> int:
    """Exit code of the last attempt. `on_restart(attempt, exit_code)` is called before each re-launch."""
    attempt = 0
    while True:
        child = subprocess.Popen(child_command(config, overrides, resume, stop_at_step))
        try:
            code = child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            child.wait()
            return INTERRUPTED[0]
        if code == 0 or code == USER_ERROR or code in INTERRUPTED or attempt >= restarts:
            return code
        attempt += 1
        on_restart(attempt, code)
        resume = "auto"
