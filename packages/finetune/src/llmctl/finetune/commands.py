"""`llmctl finetune -c FILE [--set ...]` (SFT, LoRA, DPO on the training driver) and `llmctl finetune merge-lora`.

Torch is imported only when a run starts, so `--help` and config errors need none.
"""

from __future__ import annotations

from pathlib import Path

import click

from llmctl.core.errors import UserError, require_torch

from .options import METHODS

EXAMPLE = """
\b
Example (the course lab: LoRA on Qwen2.5 with MindSpeed-preprocessed data):
  llmctl data sft --input alpaca.json --tokenizer-name-or-path Qwen2.5-0.5B --output-prefix data/alpaca \\
    --handler-name AlpacaStyleInstructionHandler --prompt-type qwen --seq-length 1024
  llmctl finetune -c lora.yaml --set task.base=Qwen2.5-0.5B --set data.path=data/alpaca
  llmctl chat --ckpt-dir Qwen2.5-0.5B --lora-dir out/lora --prompt-type qwen

\b
lora.yaml:
  task: {method: lora, prompt_type: qwen, lora: {r: 8, alpha: 16, targets: [linear_qkv, linear_proj, linear_fc1, linear_fc2]}}
  data: {seq_length: 1024}
  train: {train_iters: 2000, global_batch_size: 16, micro_batch_size: 4, lr: 1e-4, min_lr: 1e-5}
  checkpoint: {dir: out/lora, interval: 500}
"""


def load_finetune_config(config: str, overrides: list[str] | tuple[str, ...] = ()):
    """The TrainConfig of a finetuning run: `task.method` (full | lora | dpo) picks train.task (sft or dpo)."""
    from llmctl.core.train import load_train_config

    cfg = load_train_config(config, list(overrides))
    method = cfg.task.get("method")
    if method is not None:
        if method not in METHODS:
            raise UserError(f"config key 'task.method': '{method}' is not one of {', '.join(METHODS)}")
        if cfg.train.task == "pretrain":
            cfg.train.task = METHODS[method]
        elif cfg.train.task != METHODS[method]:
            raise UserError(f"task.method {method} runs train.task {METHODS[method]}, but train.task is "
                            f"{cfg.train.task}")
    elif cfg.train.task == "pretrain":
        raise UserError("config: set task.method (full, lora or dpo) or train.task (sft or dpo); "
                        "`llmctl pretrain` trains from scratch")
    return cfg


@click.group("finetune", invoke_without_command=True, context_settings={"max_content_width": 110},
             epilog=EXAMPLE)
@click.option("-c", "--config", "config", default=None, metavar="FILE", help="YAML config (see the example).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set task.lora.r=16 (repeatable).")
@click.option("--resume", default=None, metavar="auto|DIR", help="Continue from checkpoint.dir (auto) or DIR.")
@click.option("--stop-at-step", type=click.IntRange(min=1), default=None, metavar="N",
              help="Save a checkpoint and stop after step N.")
@click.pass_context
def finetune_group(ctx, config, overrides, resume, stop_at_step) -> None:
    """Finetune a model (HF dir, llmctl or Megatron-core checkpoint): task.method full | lora | dpo.

    Runs on the pretraining driver (schedules, accumulation, checkpoints, resume, logs, parallel layouts).
    A LoRA run's checkpoints each hold adapter/ (PEFT layout: adapter_config.json, adapter_model.safetensors).
    """
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        raise UserError("llmctl finetune needs -c FILE (or a subcommand: merge-lora); see --help")
    require_torch("llmctl finetune")
    cfg = load_finetune_config(config, overrides)
    from llmctl.core.train.loop import pretrain

    from llmctl.core.commands.pretrain import done_line

    result = pretrain(cfg, resume=resume, stop_at_step=stop_at_step)
    adapter = _latest_adapter(result.checkpoint_dir) if result.checkpoint_dir is not None else None
    click.echo(done_line(result, *([f"adapter {adapter}"] if adapter is not None else [])))


def _latest_adapter(ckpt_dir: Path) -> Path | None:
    from llmctl.core.nn.checkpoint import iter_dir_name, latest_iteration

    it = latest_iteration(ckpt_dir)
    path = Path(ckpt_dir) / iter_dir_name(it) / "adapter" if it is not None else None
    return path if path is not None and path.is_dir() else None


@finetune_group.command("merge-lora")
@click.option("--base", "--load", "base", required=True, type=click.Path(),
              help="The base the adapter was trained on: HF dir, llmctl or Megatron-core checkpoint.")
@click.option("--lora-dir", "--lora-load", "lora_dir", required=True, type=click.Path(),
              help="PEFT adapter dir, or a llmctl LoRA checkpoint (its latest iteration's adapter/).")
@click.option("--out-dir", "--save", "out_dir", required=True, type=click.Path(), help="Directory to create.")
@click.option("--format", "fmt", type=click.Choice(["hf", "native"]), default="hf", show_default=True,
              help="hf: config.json + model.safetensors; native: a llmctl checkpoint (iteration 0).")
@click.option("--dtype", default=None, help="Output dtype: fp32 (default), bf16 or fp16.")
@click.option("--force", is_flag=True, help="Replace --out-dir if it is not empty.")
def merge_lora_command(base, lora_dir, out_dir, fmt, dtype, force) -> None:
    """Merge a LoRA adapter into its base (W + scale * B @ A, in fp32) and write the merged model.

    \b
    Example:
      llmctl finetune merge-lora --base Qwen2.5-0.5B --lora-dir out/lora --out-dir out/merged
      llmctl finetune merge-lora --load qwen-mcore --lora-load out/lora --save out/merged --format native
    """
    require_torch("llmctl finetune merge-lora")
    path = merge_lora(base, lora_dir, out_dir, fmt=fmt, dtype=dtype, overwrite=force)
    click.echo(f"merged {lora_dir} into {base} -> {path}")


def merge_lora(base, lora_dir, out_dir, *, fmt: str = "hf", dtype=None, overwrite: bool = False) -> Path:
    import torch

    from llmctl.core.config import to_dict
    from llmctl.core.io import atomic_dir
    from llmctl.core.nn.checkpoint import save_checkpoint
    from llmctl.core.nn.convert import write_hf_dir
    from llmctl.core.nn.loading import load_model

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"--out-dir {out} is not empty (use --force to replace it)")
    loaded = load_model(base, device="cpu", dtype=torch.float32, lora_dir=lora_dir)
    state = loaded.model.state_dict()
    tok_dir = loaded.tokenizer.path if loaded.tokenizer is not None else None
    if fmt == "hf":
        return write_hf_dir(loaded.config, state, out, tok_dir, source=str(base), dtype=dtype)
    if dtype is not None:
        from llmctl.core.nn.build import parse_dtype

        state = {k: v.to(parse_dtype(dtype)) for k, v in state.items()}
    with atomic_dir(out) as tmp:
        save_checkpoint(tmp, 0, {"model": state}, {"model": to_dict(loaded.config)}, tokenizer_dir=tok_dir)
    return out
