"""`llmctl pretrain`: the CLI face of llmctl.core.train (torch is imported only when a run starts)."""

from __future__ import annotations

import sys

import click

from ..config import dump_yaml
from ..errors import UserError, require_torch


@click.command("pretrain")
@click.option("-c", "--config", "config", required=True, metavar="FILE|PRESET",
              help="YAML config, or a preset name: tiny, zen-500m.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set train.lr=1e-3 (repeatable).")
@click.option("--resume", default=None, metavar="auto|DIR",
              help="Continue from the latest checkpoint in checkpoint.dir (auto) or from DIR: model, optimizer, "
                   "schedule, RNG and data position.")
@click.option("--auto-restart", type=click.IntRange(min=0), default=0, metavar="N",
              help="Run in a child process and restart it from the latest checkpoint after a crash, up to N times.")
@click.option("--stop-at-step", type=click.IntRange(min=1), default=None, metavar="N",
              help="Save a checkpoint and stop after step N (resume later with --resume auto).")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
def pretrain_command(config: str, overrides: tuple[str, ...], resume: str | None, auto_restart: int,
                     stop_at_step: int | None, print_config: bool) -> None:
    """Pretrain a llama-family model on tokenized data (Megatron .bin/.idx), on CPU, CUDA or NPU.

    Logs go to logging.dir/RUN.jsonl (metrics) and RUN.log (Megatron-format lines); checkpoints to
    checkpoint.dir in Megatron's layout, each with its config and tokenizer.

    \b
    Example:
      llmctl data tokenize --input corpus.jsonl --tokenizer tok --output-prefix data/corpus
      llmctl pretrain -c tiny --set data.path=data/corpus --set data.tokenizer=tok
      llmctl pretrain -c run.yaml --resume auto --auto-restart 3
      llmctl pretrain -c tiny --set data.path='0.7 data/en 0.3 data/zh' --set train.train_tokens=2e6
    """
    from . import load_train_config

    if auto_restart:  # the supervisor only waits: no torch here, the child resolves and checks the model
        cfg = load_train_config(config, overrides, resolve_vocab=False)
        _supervised(cfg, config, list(overrides), resume, stop_at_step, auto_restart)
        return
    require_torch("llmctl pretrain")
    cfg = load_train_config(config, overrides)
    if print_config:
        click.echo(dump_yaml(cfg), nl=False)
        return
    from .loop import pretrain

    result = pretrain(cfg, resume=resume, stop_at_step=stop_at_step)
    parts = [f"step {result.final_step}"]
    if result.train_loss is not None:
        parts.append(f"train loss {result.train_loss:.4f}")
    if result.val_loss is not None:
        parts.append(f"val loss {result.val_loss:.4f}")
    if result.checkpoint_dir is not None:
        parts.append(f"checkpoint {result.checkpoint_dir}")
    click.echo("done: " + ", ".join(parts) + f", metrics {result.log_path}")


def _supervised(cfg, config: str, overrides: list[str], resume: str | None, stop_at_step: int | None,
                restarts: int) -> None:
    from .metrics import RunLog
    from .supervisor import supervise

    if not cfg.checkpoint.dir:
        raise UserError("--auto-restart needs checkpoint.dir in the config (restarts resume from it)")
    cfg.check()  # a bad config fails here once, not N times in children

    def on_restart(attempt: int, code: int) -> None:
        log = RunLog(cfg.logging.dir, cfg.run_name(), ["jsonl"], echo=lambda line: click.echo(line, err=True))
        log.event({"event": "restart", "attempt": attempt, "of": restarts, "exit_code": code,
                   "resume": "auto"})
        log.close()

    code = supervise(config, overrides, resume=resume, stop_at_step=stop_at_step, restarts=restarts,
                     on_restart=on_restart)
    if code:
        click.echo(f"error: training exited with code {code}" + (" after all restarts" if code != 2 else ""),
                   err=True)
        sys.exit(code if code > 0 else 1)
