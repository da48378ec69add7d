"""`llmctl plot curves|exp-loss|summary`: training curves of llmctl JSONL and Megatron/MindSpeed text logs
(reading and drawing are `llmctl.core.plot`). Torch-free."""

from __future__ import annotations

from pathlib import Path

import click

from ..plot import plot_curves, plot_exp_loss, read_log, summary_table

_logs = click.argument("logs", nargs=-1, required=True, type=click.Path(dir_okay=False))
_seq = click.option("--seq-length", type=click.IntRange(min=1), default=None,
                    help="Sequence length for Megatron logs that do not state it (tokens = samples x this).")
_smooth = click.option("--smooth-window", type=click.IntRange(min=1), default=1, show_default=True,
                       help="Trailing moving-average window, in logged points.")


@click.group("plot")
def plot_group() -> None:
    """Plot and summarise training logs (llmctl JSONL or Megatron/MindSpeed text logs).

    \b
    Example:
      llmctl plot curves logs/a.jsonl logs/b.log --output cmp.png --smooth-window 50 --title "lr sweep"
      llmctl plot exp-loss logs/a.jsonl --token-threshold 5e9 --output late.png
      llmctl plot summary logs/*.log --seq-length 4096
    """


@plot_group.command("curves")
@_logs
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Image to write (.png/.pdf/.svg).")
@_smooth
@click.option("--title", default=None, help="Figure title.")
@_seq
def curves_command(logs, output, smooth_window, title, seq_length) -> None:
    """Loss (train + validation), learning rate and throughput against tokens.

    \b
    Example:
      llmctl plot curves logs/exp1.log logs/exp2.log --output comparison.png --smooth-window 50 \\
          --title "Experiment Comparison"
    """
    path = plot_curves([read_log(p, seq_length) for p in logs], Path(output), smooth_window=smooth_window,
                       title=title)
    click.echo(f"wrote {path}")


@plot_group.command("exp-loss")
@_logs
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Image to write.")
@click.option("--token-threshold", type=float, default=5e9, show_default=True, help="Plot only after this many tokens.")
@_smooth
@click.option("--title", default=None, help="Figure title.")
@_seq
def exp_loss_command(logs, output, token_threshold, smooth_window, title, seq_length) -> None:
    """exp(loss) after N tokens, to compare runs late in training.

    \b
    Example:
      llmctl plot exp-loss logs/exp1.log logs/exp2.log --output late.png --token-threshold 5e9 --smooth-window 50
    """
    path = plot_exp_loss([read_log(p, seq_length) for p in logs], Path(output), token_threshold=token_threshold,
                         smooth_window=smooth_window, title=title)
    click.echo(f"wrote {path}")


@plot_group.command("summary")
@_logs
@_seq
def summary_command(logs, seq_length) -> None:
    """Per log: steps, tokens, median elapsed ms per step, tokens/s (TOKENS_PER_STEP / sec_per_step), losses.

    \b
    Example:
      llmctl plot summary logs/tp1.log logs/tp2.log logs/tp4.log --seq-length 4096
    """
    click.echo(summary_table(logs, seq_length), nl=False)
