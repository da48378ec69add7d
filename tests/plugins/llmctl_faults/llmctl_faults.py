"""Fault injection for the trainer tests, as a third-party callback plugin.

LLMCTL_FAULTS is a comma-separated list of `key=value`:
  kill_at_step=N   SIGKILL this process when step N starts (once: a marker file in `marker_dir` remembers);
                   N+M+...: at each of these steps, once each (a run restarted in between)
  kill_rank=R      ... only on this torchrun rank (default: every rank)
  hang_at_save=N   stall forever once every shard of iteration N's checkpoint is on disk, before it is
                   published (the test SIGKILLs the stalled process)
  marker_dir=DIR   where the once-only markers go (default: the run's checkpoint dir)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from llmctl.core.plugins import hookimpl


def _faults() -> dict[str, str]:
    spec = os.environ.get("LLMCTL_FAULTS", "")
    return dict(item.split("=", 1) for item in spec.split(",") if "=" in item)


class Faults:
    def on_step_start(self, trainer, step):
        f = _faults()
        if str(step) not in f.get("kill_at_step", "").split("+"):
            return
        if "kill_rank" in f and f["kill_rank"] != os.environ.get("RANK", "0"):
            return
        marker = Path(f.get("marker_dir") or trainer.ckpt_dir) / f".faults_killed_at_{step}"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)

    def on_checkpoint_publish(self, trainer, tmp_dir):
        if _faults().get("hang_at_save") == str(trainer.state.iteration):
            time.sleep(3600)


@hookimpl
def register_callbacks(register):
    register("faults", Faults())
