"""`llmctl doctor`: what this install has (llmctl packages, torch and its build, the optional extras, and on an
Ascend box torch_npu, the NPUs and the CANN toolkit it would use), so a bug report says it in one paste. The
probing lives in llmctl.core.deps, shared with quickstart's check."""

from __future__ import annotations

import json

import click

from llmctl.core import deps


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def doctor_command(as_json: bool) -> None:
    """Show Python, the installed llmctl packages, torch (version, CUDA/NPU availability and devices, the
    device llmctl picks), which optional dependencies are present (each missing one with the pip command that
    adds it), and torch_npu, CANN (version and where, from $ASCEND_TOOLKIT_HOME) and the Ascend driver.

    \b
    Example:
      llmctl doctor                # paste this into a bug report
      llmctl doctor --json
    """
    rep = deps.report()
    click.echo(json.dumps(rep, indent=2) if as_json else deps.format_report(rep))
