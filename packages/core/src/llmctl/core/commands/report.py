"""`llmctl report RUN_DIR... [--eval EVAL_DIR...] [--bench THROUGHPUT_DIR] --out report/`: the submission a
course lab asks for, from what the runs left on disk (`llmctl.core.report`). Everything is read and checked
first, then built in a temp folder that replaces --out only when complete. Torch-free."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from ..io import atomic_dir


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RUN_DIR...")
@click.option("--eval", "evals", multiple=True, type=click.Path(path_type=Path), metavar="EVAL_DIR",
              help="An `llmctl eval run --out-dir` (its results.json); repeatable.")
@click.option("--bench", type=click.Path(path_type=Path), default=None, metavar="THROUGHPUT_DIR",
              help="A `llmctl bench throughput -c ... --sweep ...` output folder (its throughput.json).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write report.md, report.html and the PNGs into (a previous report is replaced).")
@click.option("--title", default="Training report", show_default=True, help="The report's title.")
@click.option("--token-threshold", type=float, default=None,
              help="exp(loss) plot: only after this many tokens (default 5e9 as in the lab, or half of the "
                   "shortest run when a run ends before that).")
@click.option("--smooth-window", type=click.IntRange(min=1), default=1, show_default=True,
              help="Moving-average window of the loss and grad-norm curves, in logged points.")
@click.option("--seq-length", type=click.IntRange(min=1), default=None,
              help="For Megatron logs that do not state it (tokens = consumed samples x this).")
def report_command(runs, evals, bench, out, title, token_threshold, smooth_window, seq_length) -> None:
    """Write a lab report: curves (loss, exp(loss) after a token threshold, LR, grad norm, throughput), the
    eval table, the ablation table and chart, and each run's config and environment, as report.md with PNGs
    beside it and report.html.

    A RUN_DIR is a run's folder (its logs and checkpoints below it) or its log file; llmctl JSONL and
    Megatron/MindSpeed text logs both work.

    \b
    Example:
      llmctl report runs/dp2 runs/tp2 --eval runs/dp2/eval --bench bench/throughput --out report/
      llmctl report logs/zen_500m_20k.log --seq-length 4096 --out report/   # a MindSpeed log
    """
    from ..plot import pyplot
    from ..report.compose import write_report
    from ..report.figures import default_token_threshold
    from ..report.gather import read_bench, read_eval, read_runs

    pyplot()  # no matplotlib: one line saying how to install it, before anything is read or written
    if out.exists() and any(out.iterdir()) and not (out / "report.md").is_file():
        raise UserError(f"--out {out} exists and is not a report folder; choose an empty or new one")
    got_runs = read_runs(list(runs), seq_length)
    got_evals = [read_eval(p, got_runs) for p in evals]
    got_bench = read_bench(bench) if bench is not None else None
    threshold = token_threshold if token_threshold is not None else default_token_threshold(got_runs)
    with atomic_dir(out) as tmp:
        write_report(tmp, got_runs, got_evals, got_bench, title=title, threshold=threshold,
                     smooth_window=smooth_window)
    files = sorted(p.name for p in out.iterdir())
    click.echo(f"wrote {out / 'report.md'} and {out / 'report.html'} ({len(files)} files: {', '.join(files)})")
