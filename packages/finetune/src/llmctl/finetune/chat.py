"""`llmctl chat`: talk to a model with the template it was finetuned with (MindSpeed's generate_*_ptd.sh).

A REPL with history, streaming output, `/reset` and `/exit`; `--prompt` answers once and exits (scripts,
tests). The prompt is rendered by the same template code that made the training data; with no
`--prompt-type`, the one recorded in the checkpoint's config (`task.prompt_type`) is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import click

from llmctl.core.errors import UserError, require_torch


def stream(model, prompt: list[int], *, max_new_tokens: int, stop_ids: list[int], temperature: float = 0.0,
           top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None
           ) -> Iterator[int]:
    """Yield new token ids one at a time (KV-cache decoding; the processors are core generate's)."""
    import torch

    from llmctl.core.nn.generate import apply_repetition_penalty, warp_logits
    from llmctl.core.nn.model import KVCache

    param = next(model.parameters())
    cfg = model.cfg
    room = cfg.max_seq_len - len(prompt)
    max_new_tokens = min(max_new_tokens, room)
    if max_new_tokens <= 0:
        return
    gen = torch.Generator(device=param.device).manual_seed(seed) if seed is not None and temperature > 0 else None
    cache = KVCache(cfg, 1, len(prompt) + max_new_tokens, param.dtype, param.device)
    seen = torch.zeros((1, cfg.vocab_size), dtype=torch.bool, device=param.device)
    tokens = torch.as_tensor([prompt], dtype=torch.long, device=param.device)
    seen[0, tokens[0]] = True
    with torch.inference_mode():
        logits = model(tokens, cache=cache)[:, -1].float()
        for _ in range(max_new_tokens):
            logits = apply_repetition_penalty(logits, seen, repetition_penalty)
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                probs = warp_logits(logits, temperature, top_k, top_p).softmax(-1)
                nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
            tid = int(nxt)
            if tid in stop_ids:
                return
            yield tid
            seen[0, tid] = True
            logits = model(nxt[:, None], cache=cache)[:, -1].float()


def reply(loaded, template, history: list[dict], system: str | None, emit: Callable[[str], None],
          **sampling) -> str:
    """Generate the assistant's next turn for `history` (ending with a user turn), emitting text as it grows."""
    from .templates import encode_prompt, stop_ids

    tok = loaded.tokenizer
    msgs = list(history)
    prompt = encode_prompt(tok, template, msgs, system)
    while len(prompt) >= loaded.config.max_seq_len and len(msgs) > 2:  # drop the oldest exchange
        msgs = msgs[2:]
        prompt = encode_prompt(tok, template, msgs, system)
    ids: list[int] = []
    shown = ""
    for tid in stream(loaded.model, prompt, stop_ids=stop_ids(tok, template), **sampling):
        ids.append(tid)
        text = tok.decode(ids)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            emit(text[len(shown):])
            shown = text
    text = tok.decode(ids)
    emit(text[len(shown):])
    return text


def recorded_prompt_type(ckpt_dir: str, lora_dir: str | None) -> str | None:
    """task.prompt_type from the config.yaml of the LoRA checkpoint or of the model checkpoint, if any."""
    import yaml

    for d in (lora_dir, ckpt_dir):
        if d is None:
            continue
        p = Path(d)
        for cand in (p.parent / "config.yaml", p / "config.yaml"):
            if cand.is_file():
                task = (yaml.safe_load(cand.read_text(encoding="utf-8")) or {}).get("task") or {}
                if task.get("prompt_type"):
                    return str(task["prompt_type"])
        from llmctl.core.nn.checkpoint import is_checkpoint_dir, resolve_iteration_dir

        if is_checkpoint_dir(p):
            cfg = resolve_iteration_dir(p) / "config.yaml"
            if cfg.is_file():
                task = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("task") or {}
                if task.get("prompt_type"):
                    return str(task["prompt_type"])
    return None


@click.command("chat", context_settings={"max_content_width": 110})
@click.option("--ckpt-dir", "--load", "ckpt_dir", required=True, type=click.Path(),
              help="Model: HF dir, llmctl checkpoint or Megatron-core checkpoint (the base, for --lora-dir).")
@click.option("--lora-dir", "--lora-load", "lora_dir", default=None, type=click.Path(),
              help="LoRA adapter (PEFT dir or a llmctl LoRA checkpoint), merged into the model at load.")
@click.option("--prompt-type", default=None, help="Template (qwen, chatml, llama3, ...; default: the one the "
              "checkpoint was finetuned with, else 'empty').")
@click.option("--prompt-type-path", default=None, type=click.Path(), help="A templates.json with more templates.")
@click.option("--system", default=None, help="System prompt (default: the template's).")
@click.option("--prompt", default=None, help="Answer this one message and exit (no REPL).")
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-k", type=int, default=0, show_default=True)
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--repetition-penalty", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=None)
@click.option("--device", default=None, help="cpu, cuda, npu (default: best available).")
@click.option("--dtype", default="fp32", show_default=True)
@click.option("--iteration", type=int, default=None, help="Checkpoint iteration (default: latest).")
def chat_command(ckpt_dir, lora_dir, prompt_type, prompt_type_path, system, prompt, max_new_tokens, temperature,
                 top_k, top_p, repetition_penalty, seed, device, dtype, iteration) -> None:
    """Chat with a (finetuned) model: history, streaming output, /reset clears the history, /exit quits.

    \b
    Example:
      llmctl chat --ckpt-dir out/sft --prompt-type qwen
      llmctl chat --ckpt-dir Qwen2.5-0.5B --lora-dir out/lora --system "You are terse."
      llmctl chat --ckpt-dir out/sft --prompt "Give three tips for staying healthy."
    """
    require_torch("llmctl chat")
    from llmctl.core.nn.loading import load_model

    from .templates import get_template

    name = prompt_type or recorded_prompt_type(ckpt_dir, lora_dir)
    if name is None:
        click.echo("note: no --prompt-type and none recorded in the checkpoint; using 'empty'", err=True)
        name = "empty"
    template = get_template(name, prompt_type_path)
    loaded = load_model(ckpt_dir, device=device, dtype=dtype, iteration=iteration, lora_dir=lora_dir)
    if loaded.source == "mcore":  # as generate says it: the format was told from the keys
        click.echo(f"read a megatron-core checkpoint from {ckpt_dir}", err=True)
    if loaded.tokenizer is None:
        raise UserError(f"{ckpt_dir}: no tokenizer next to the model")
    sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                    repetition_penalty=repetition_penalty, seed=seed)
    emit = lambda s: click.echo(s, nl=False)  # noqa: E731
    if prompt is not None:
        reply(loaded, template, [{"role": "user", "content": prompt}], system, emit, **sampling)
        click.echo("")
        return
    history: list[dict] = []
    click.echo(f"chat with {ckpt_dir} (template {template.name}); /reset clears the history, /exit quits", err=True)
    while True:
        try:
            line = click.prompt(">>", prompt_suffix=" ", default="", show_default=False)
        except (EOFError, click.Abort):
            click.echo("")
            return
        text = line.strip()
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            history.clear()
            click.echo("(history cleared)", err=True)
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        answer = reply(loaded, template, history, system, emit, **sampling)
        click.echo("")
        history.append({"role": "assistant", "content": answer})
