"""`llmctl convert hf-to-mcore|mcore-to-hf|native-to-mcore|mcore-to-native` (aliases hf2mcore, mcore2hf):
Megatron-core / MindSpeed checkpoints with TP/PP shards, under the course's flag names. Torch is imported
inside the commands, so `llmctl --help` works on a torch-free box."""

from __future__ import annotations

import click

from ..errors import require_torch

_tp = click.option("--target-tensor-parallel-size", "tp", type=int, default=1, show_default=True,
                   help="TP shards to write (must divide the KV heads, ffn size and vocabulary rows).")
_pp = click.option("--target-pipeline-parallel-size", "pp", type=int, default=1, show_default=True,
                   help="Pipeline stages to write.")
_layers = click.option("--num-layer-list", default=None,
                       help="Layers per pipeline stage, e.g. 3,5 (default: an even split).")
_force = click.option("--force", is_flag=True, help="Replace --out-dir if it is not empty.")
_iteration = click.option("--iteration", type=int, default=None, help="Iteration to read (default: latest).")
_tokenizer = click.option("--tokenizer", type=click.Path(), default=None,
                          help="Tokenizer dir to ship along (default: the one in the checkpoint, if any).")


def _describe(info: dict) -> str:
    layers = ",".join(map(str, info["num_layer_list"]))
    return f"read a megatron-core checkpoint (TP={info['tp']}, PP={info['pp']}, layers per stage {layers})"


@click.command("hf-to-mcore")
@click.option("--hf-dir", required=True, type=click.Path(file_okay=False), help="HF dir: config.json + weights.")
@click.option("--out-dir", required=True, type=click.Path(), help="Megatron checkpoint dir to create.")
@_tp
@_pp
@_layers
@click.option("--padded-vocab-size", type=click.IntRange(min=1), default=None,
              help="Zero-pad the embedding/output rows to N, as MindSpeed's scripts do (e.g. 152064); "
                   "recorded in args, and mcore-to-hf drops the padding again. Wins over the next option.")
@click.option("--make-vocab-size-divisible-by", "divisible_by", type=click.IntRange(min=1), default=1,
              show_default=True, help="Megatron's: zero-pad the rows to a multiple of N x the target TP size "
                                      "(1: no padding, as MindSpeed's converter).")
@_force
def hf_to_mcore_command(hf_dir, out_dir, tp, pp, num_layer_list, padded_vocab_size, divisible_by, force) -> None:
    """Write an HF llama/qwen2 model as a MindSpeed / megatron-core checkpoint (iteration 1), sharded TP x PP.

    \b
    Example:
      llmctl convert hf-to-mcore --hf-dir Qwen2.5-7B --out-dir ckpt/qwen7b-tp8 \\
          --target-tensor-parallel-size 8 --target-pipeline-parallel-size 1
      llmctl convert hf2mcore --hf-dir tiny-llama --out-dir ckpt/tp2pp2 \\
          --target-tensor-parallel-size 2 --target-pipeline-parallel-size 2 --num-layer-list 1,3
    """
    require_torch("llmctl convert")
    from ..nn.mcore_convert import hf_to_mcore

    it_dir = hf_to_mcore(hf_dir, out_dir, tp=tp, pp=pp, num_layer_list=num_layer_list,
                         padded_vocab_size=padded_vocab_size, make_vocab_size_divisible_by=divisible_by,
                         overwrite=force)
    click.echo(f"wrote {it_dir}")


@click.command("mcore-to-hf")
@click.option("--ckpt-dir", required=True, type=click.Path(), help="Megatron checkpoint root or iter_N dir.")
@click.option("--out-dir", required=True, type=click.Path(), help="HF directory to create.")
@_iteration
@_tokenizer
@click.option("--dtype", default=None, help="Store weights as fp32 / bf16 / fp16 (default: as stored).")
@_force
def mcore_to_hf_command(ckpt_dir, out_dir, iteration, tokenizer, dtype, force) -> None:
    """Gather a megatron-core checkpoint's TP/PP shards into config.json + model.safetensors for transformers.

    \b
    Example:
      llmctl convert mcore-to-hf --ckpt-dir outputs/zen_500m_20k --out-dir hf/zen-500m --tokenizer tok/
      llmctl convert mcore2hf --ckpt-dir ckpt/qwen7b-tp8 --out-dir hf/qwen7b
    """
    require_torch("llmctl convert")
    from ..nn.mcore_convert import mcore_to_hf

    out, info = mcore_to_hf(ckpt_dir, out_dir, iteration=iteration, tokenizer=tokenizer, dtype=dtype,
                            overwrite=force)
    click.echo(f"{_describe(info)}; wrote {out}")


@click.command("native-to-mcore")
@click.option("--ckpt-dir", required=True, type=click.Path(), help="llmctl checkpoint root or iter_N dir.")
@click.option("--out-dir", required=True, type=click.Path(), help="Megatron checkpoint dir to create.")
@_iteration
@_tp
@_pp
@_layers
@_force
def native_to_mcore_command(ckpt_dir, out_dir, iteration, tp, pp, num_layer_list, force) -> None:
    """Write a llmctl checkpoint's weights as a megatron-core checkpoint (same iteration) for MindSpeed.

    \b
    Example:
      llmctl convert native-to-mcore --ckpt-dir out/pretrain --out-dir mcore/run1 --target-tensor-parallel-size 2
    """
    require_torch("llmctl convert")
    from ..nn.mcore_convert import native_to_mcore

    it_dir = native_to_mcore(ckpt_dir, out_dir, tp=tp, pp=pp, num_layer_list=num_layer_list, iteration=iteration,
                             overwrite=force)
    click.echo(f"wrote {it_dir}")


@click.command("mcore-to-native")
@click.option("--ckpt-dir", required=True, type=click.Path(), help="Megatron checkpoint root or iter_N dir.")
@click.option("--out-dir", required=True, type=click.Path(), help="llmctl checkpoint dir to create.")
@_iteration
@_tokenizer
@_force
def mcore_to_native_command(ckpt_dir, out_dir, iteration, tokenizer, force) -> None:
    """Gather a megatron-core checkpoint into a llmctl checkpoint (config.yaml + one shard + tokenizer/).

    \b
    Example:
      llmctl convert mcore-to-native --ckpt-dir outputs/zen_500m_20k --out-dir ckpt/zen --tokenizer tok/
    """
    require_torch("llmctl convert")
    from ..nn.mcore_convert import mcore_to_native

    out, info = mcore_to_native(ckpt_dir, out_dir, iteration=iteration, tokenizer=tokenizer, overwrite=force)
    click.echo(f"{_describe(info)}; wrote {out}")


def add_mcore_commands(group: click.Group) -> None:
    """Attach the mcore conversions (and MindSpeed's names for two of them) to `llmctl convert`."""
    for cmd, alias in ((hf_to_mcore_command, "hf2mcore"), (mcore_to_hf_command, "mcore2hf"),
                       (native_to_mcore_command, None), (mcore_to_native_command, None)):
        group.add_command(cmd)
        if alias:
            group.add_command(cmd, alias)
