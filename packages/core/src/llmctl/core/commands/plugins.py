"""`llmctl plugins`: every plugin with its distribution, version and what it registered."""

from __future__ import annotations

import json

import click

from ..plugins import get_bus


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def plugins_command(as_json: bool) -> None:
    """List every plugin with its distribution, version and what it registered.

    \b
    Example:
      llmctl plugins
      LLMCTL_LOAD_PLUGINS= llmctl plugins   # built-ins only
    """
    rows = get_bus().summary()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['plugin']}  ({row['distribution']} {row['version']})")
        for kind, names in row["registered"].items():
            click.echo(f"    {kind}: {', '.join(names)}")
