"""llmctl-scaling's plugin: the `llmctl scaling` command group (plan, run, fit, predict).

The commands import numpy/scipy/matplotlib lazily so `llmctl --help` stays fast.
"""

from __future__ import annotations

from llmctl.core.plugins import hookimpl


@hookimpl
def register_commands(cli):
    from .commands import scaling_group

    cli.add_command(scaling_group)
