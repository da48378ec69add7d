"""`llmctl scaling plan|run|fit|predict`: the CLI face of llmctl.scaling."""

from __future__ import annotations

import click


@click.group("scaling")
def scaling_group() -> None:
    """Decide what to train from a scaling-law fit of small runs: plan a grid, run it, fit, predict."""
