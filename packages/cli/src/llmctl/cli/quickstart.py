"""`llmctl quickstart`: the whole lab-1 pipeline at toy scale on a CPU, in minutes (placeholder until the
stages land)."""

from __future__ import annotations

import click


@click.command("quickstart")
@click.option("--out-dir", default="llmctl_quickstart", show_default=True, type=click.Path(file_okay=False))
def quickstart_command(out_dir: str) -> None:
    """Run data → tokenizer → pretrain → resume → eval → generate → plots on generated data.

    \b
    Example:
      llmctl quickstart --out-dir /tmp/qs
    """
    raise click.ClickException("quickstart is being built")
