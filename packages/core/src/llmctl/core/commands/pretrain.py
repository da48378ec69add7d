"""`llmctl pretrain`: the CLI face of llmctl.core.train (torch is imported only when a run starts)."""

from __future__ import annotations

import sys

import click

from ..config import dump_yaml
from ..errors import UserError, require_torch


@click.command("pretrain")
@click.option("-c", "--config", "config", required=True, metavar="FILE|PRESET",
              help="YAML config, or a preset name: tiny, zen-500m, minilm-0.1b.")
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
@click.option("--from", "from_checkpoint", default=None, metavar="CKPT_DIR",
              help="Branch: start --stage from this checkpoint (an iter_N dir, or a checkpoint dir's latest) of an "
                   "earlier stage, in a new run dir (<origin>_<stage>_from_<N>) that records where it came from.")
@click.option("--stage", "branch_stage", default=None, metavar="NAME",
              help="With --from: the stage (a name in the config's stages:) the branch trains.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=None, metavar="N",
              help="Check the layout for N processes, then run under torchrun (the lab's GPUS_PER_NODE); "
                   "--auto-restart becomes torchrun --max-restarts with --resume auto.")
@click.option("--tp", type=click.IntRange(min=1), default=None, help="Tensor-parallel size (TP): parallel.tp.")
@click.option("--pp", type=click.IntRange(min=1), default=None, help="Pipeline-parallel size (PP): parallel.pp.")
@click.option("--cp", type=click.IntRange(min=1), default=None, help="Context-parallel size (CP): parallel.cp.")
@click.option("--num-layer-list", default=None, metavar="5,7", help="Layers per pipeline stage: parallel.num_layer_list.")
@click.option("--batch-size-per-device", type=click.IntRange(min=1), default=None,
              help="BATCH_SIZE_PER_DEVICE: train.micro_batch_size.")
@click.option("--tokens-per-step", type=click.IntRange(min=1), default=None,
              help="TOKENS_PER_STEP: train.tokens_per_step (global batch = this / seq_length).")
@click.option("--lab-env", is_flag=True, help="Read TP, PP, CP, NUM_LAYER_LIST, GPUS_PER_NODE, "
              "BATCH_SIZE_PER_DEVICE, TOKENS_PER_STEP from the environment for knobs not given as flags.")
def pretrain_command(config: str, overrides: tuple[str, ...], resume: str | None, auto_restart: int,
                     stop_at_step: int | None, print_config: bool, nproc_per_node: int | None, lab_env: bool,
                     from_checkpoint: str | None, branch_stage: str | None, **knobs) -> None:
    """Pretrain a llama-family model on tokenized data (Megatron .bin/.idx), on CPU, CUDA or NPU.

    Logs go to logging.dir/RUN.jsonl (metrics) and RUN.log (Megatron-format lines); checkpoints to
    checkpoint.dir in Megatron's layout, each with its config and tokenizer.

    \b
    Example:
      llmctl data tokenize --input corpus.jsonl --tokenizer tok --output-prefix data/corpus
      llmctl pretrain -c tiny --set data.path=data/corpus --set data.tokenizer=tok
      llmctl pretrain -c run.yaml --resume auto --auto-restart 3
      llmctl pretrain -c run.yaml --nproc-per-node 8 --tp 2 --set parallel.strategy=fsdp2
      TP=2 GPUS_PER_NODE=8 llmctl pretrain -c run.yaml --lab-env
      llmctl pretrain -c tiny --set data.path='0.7 data/en 0.3 data/zh' --set train.train_tokens=2e6
      llmctl pretrain -c zen-500m-staged --set data.path=data/web --from outputs/zen_staged/iter_0040000 \
          --stage anneal
    """
    import os

    from ..train import load_train_config
    from ..train.launch import exec_torchrun, knob_overrides, knob_values, pretrain_args

    values = knob_values({**knobs, "nproc_per_node": nproc_per_node}, os.environ if lab_env else None)
    overrides = (*overrides, *knob_overrides(values))
    if (from_checkpoint is None) != (branch_stage is None):
        raise UserError("--from CKPT_DIR and --stage NAME go together: a branch starts that stage from that "
                        "checkpoint")
    if from_checkpoint is not None:
        overrides = (*overrides, f"branch.checkpoint={from_checkpoint}", f"branch.stage={branch_stage}")
    nproc = int(values.get("nproc_per_node") or 0)
    if nproc and not print_config:
        require_torch("llmctl pretrain --nproc-per-node")
        cfg = load_train_config(config, overrides)
        if auto_restart and not cfg.checkpoint.dir:
            raise UserError("--auto-restart needs checkpoint.dir in the config (restarts resume from it)")
        args = pretrain_args(config, list(overrides), "auto" if auto_restart else resume, stop_at_step)
        exec_torchrun(cfg, nproc, args, max_restarts=auto_restart)
    if auto_restart:  # the supervisor only waits: no torch here, the child resolves and checks the model
        cfg = load_train_config(config, overrides, resolve_vocab=False)
        _supervised(cfg, config, list(overrides), resume, stop_at_step, auto_restart)
        return
    require_torch("llmctl pretrain")
    cfg = load_train_config(config, overrides)
    if print_config:
        click.echo(dump_yaml(cfg), nl=False)
        return
    from ..train.loop import pretrain

    result = pretrain(cfg, resume=resume, stop_at_step=stop_at_step)
    click.echo(done_line(result))


def done_line(result, *extra: str) -> str:
    """The one line a training command ends with: step, losses, checkpoint, `extra` parts, metrics file."""
    parts = [f"step {result.final_step}"]
    if result.train_loss is not None:
        parts.append(f"train loss {result.train_loss:.4f}")
    if result.val_loss is not None:
        parts.append(f"val loss {result.val_loss:.4f}")
    if result.checkpoint_dir is not None:
        parts.append(f"checkpoint {result.checkpoint_dir}")
    return "done: " + ", ".join([*parts, *extra]) + f", metrics {result.log_path}"


def _supervised(cfg, config: str, overrides: list[str], resume: str | None, stop_at_step: int | None,
                restarts: int) -> None:
    from ..train.metrics import RunLog
    from ..train.supervisor import supervise

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
