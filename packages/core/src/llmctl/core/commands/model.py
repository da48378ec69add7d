"""`llmctl convert hf-to-native|native-to-hf` and `llmctl generate`. Torch is imported inside the commands, so
`llmctl --help` works on a torch-free box and these exit 2 with an install hint there."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import UserError, require_torch


@click.group("convert")
def convert_group() -> None:
    """Convert between Hugging Face dirs, llmctl checkpoints and Megatron-core (MindSpeed) checkpoints.

    \b
    Example:
      llmctl convert hf-to-native --hf-dir Qwen2.5-0.5B --out-dir ckpt/qwen
      llmctl convert native-to-hf --ckpt-dir ckpt/run1 --out-dir hf/run1
      llmctl convert hf2mcore --hf-dir Qwen2.5-7B --out-dir mcore/qwen7b --target-tensor-parallel-size 8
      llmctl convert mcore2hf --ckpt-dir mcore/qwen7b --out-dir hf/qwen7b
    """


@convert_group.command("hf-to-native")
@click.option(
    "--hf-dir", required=True, type=click.Path(file_okay=False), help="HF dir: config.json + weights."
)
@click.option("--out-dir", required=True, type=click.Path(), help="Checkpoint dir to create (iteration 0).")
@click.option("--force", is_flag=True, help="Replace --out-dir if it is not empty.")
def hf_to_native_command(hf_dir: str, out_dir: str, force: bool) -> None:
    """Import an HF llama/qwen2 model (and its tokenizer) as a llmctl checkpoint at iteration 0.

    \b
    Example:
      llmctl convert hf-to-native --hf-dir models/Qwen2.5-0.5B --out-dir ckpt/qwen0.5b
      llmctl generate --ckpt-dir ckpt/qwen0.5b --prompt "Hello"
    """
    require_torch("llmctl convert")
    from ..nn.convert import hf_to_native

    it_dir = hf_to_native(hf_dir, out_dir, overwrite=force)
    click.echo(f"wrote {it_dir}")


@convert_group.command("native-to-hf")
@click.option("--ckpt-dir", required=True, type=click.Path(), help="Checkpoint root or an iter_N directory.")
@click.option("--out-dir", required=True, type=click.Path(), help="HF directory to create.")
@click.option("--iteration", type=int, default=None, help="Iteration to export (default: latest).")
@click.option(
    "--dtype", default=None, help="Store weights as fp32 / bf16 / fp16 (default: as in the checkpoint)."
)
@click.option("--force", is_flag=True, help="Replace --out-dir if it is not empty.")
def native_to_hf_command(
    ckpt_dir: str, out_dir: str, iteration: int | None, dtype: str | None, force: bool
) -> None:
    """Export a llmctl checkpoint as config.json + model.safetensors + tokenizer files for transformers.

    \b
    Example:
      llmctl convert native-to-hf --ckpt-dir out/pretrain --out-dir hf/zen-500m
      python -c "from transformers import AutoModelForCausalLM as M; M.from_pretrained('hf/zen-500m')"
    """
    require_torch("llmctl convert")
    from ..nn.convert import native_to_hf

    click.echo(f"wrote {native_to_hf(ckpt_dir, out_dir, iteration, dtype=dtype, overwrite=force)}")


@click.command("generate")
@click.option(
    "--ckpt-dir",
    type=click.Path(),
    default=None,
    help="A llmctl checkpoint (root or iter_N) or an HF model directory.",
)
@click.option(
    "--preset", default=None, help="Instead of --ckpt-dir: a freshly initialised model preset (e.g. tiny)."
)
@click.option(
    "--tokenizer",
    "tokenizer_path",
    type=click.Path(),
    default=None,
    help="Tokenizer dir (default: the one saved with the model; required with --preset).",
)
@click.option("--prompt", "prompts", multiple=True, required=True, help="Prompt text; repeat for a batch.")
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-k", type=int, default=0, show_default=True, help="0 = off.")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="1 = off.")
@click.option(
    "--repetition-penalty", type=float, default=1.0, show_default=True, help="1 = off (HF semantics)."
)
@click.option("--seed", type=int, default=None, help="Makes sampling (and --preset init) reproducible.")
@click.option("--device", default=None, help="cpu, cuda, npu, cuda:1 ... (default: best available).")
@click.option("--dtype", default="fp32", show_default=True, help="fp32, bf16 or fp16.")
@click.option("--iteration", type=int, default=None, help="Checkpoint iteration (default: latest).")
@click.option("--lora-dir", default=None, type=click.Path(),
              help="LoRA adapter (PEFT dir or a llmctl LoRA checkpoint) merged into --ckpt-dir's weights.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per prompt: prompt, completion, tokens.")
def generate_command(
    ckpt_dir,
    preset,
    tokenizer_path,
    prompts,
    max_new_tokens,
    temperature,
    top_k,
    top_p,
    repetition_penalty,
    seed,
    device,
    dtype,
    iteration,
    lora_dir,
    as_json,
) -> None:
    """Continue each --prompt with a model from a native checkpoint or an HF directory (KV-cache decoding).

    \b
    Example:
      llmctl generate --ckpt-dir out/pretrain --prompt "Once upon a time" --max-new-tokens 50
      llmctl generate --ckpt-dir hf/qwen --prompt "Hi" --prompt "Bonjour" --temperature 0.8 --seed 1
      llmctl generate --preset tiny --tokenizer tok/ --prompt "smoke test" --max-new-tokens 8
      llmctl generate --ckpt-dir hf/qwen --lora-dir out/lora --prompt "Hi"
    """
    require_torch("llmctl generate")
    from ..nn.generate import generate_text

    if lora_dir is not None and ckpt_dir is None:
        raise UserError("--lora-dir needs --ckpt-dir (the base model the adapter was trained on)")
    loaded = _load_for_generate(ckpt_dir, preset, tokenizer_path, seed, device, dtype, iteration, lora_dir)
    if loaded.source == "mcore":
        click.echo(f"read a megatron-core checkpoint from {ckpt_dir}", err=True)
    texts = generate_text(
        loaded,
        list(prompts),
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        seed=seed,
        show_progress=True,
    )
    for prompt, text in zip(prompts, texts):
        if as_json:
            click.echo(json.dumps({"prompt": prompt, "completion": text}, ensure_ascii=False))
        else:
            click.echo(prompt + text)
            if len(prompts) > 1:
                click.echo("")


def _load_for_generate(ckpt_dir, preset, tokenizer_path, seed, device, dtype, iteration, lora_dir=None):
    import dataclasses

    import torch

    from ..model_config import get_preset
    from ..nn.build import build_model
    from ..nn.device import pick_device, require_device
    from ..nn.loading import LoadedModel, load_model
    from ..tokenizer import load_tokenizer

    if (ckpt_dir is None) == (preset is None):
        raise UserError("give exactly one of --ckpt-dir (a trained/imported model) or --preset (random init)")
    if ckpt_dir is not None:
        loaded = load_model(ckpt_dir, device=device, dtype=dtype, iteration=iteration, lora_dir=lora_dir)
        if tokenizer_path is not None:
            loaded.tokenizer = load_tokenizer(tokenizer_path)
        return loaded
    if tokenizer_path is None:
        raise UserError("--preset needs --tokenizer DIR (a fresh model has no tokenizer of its own)")
    tok = load_tokenizer(tokenizer_path)
    cfg = dataclasses.replace(get_preset(preset), vocab_size=tok.vocab_size)
    torch.manual_seed(0 if seed is None else seed)
    dev = require_device(device) if device else pick_device()
    model = build_model(cfg, device=dev, dtype=dtype).eval()
    return LoadedModel(model, tok, cfg, "preset", Path(tokenizer_path))
