"""Autoregressive decoding with a KV cache: greedy or sampled (temperature, top-k, top-p), HF-style
repetition penalty, stop tokens, and batches of different-length prompts left-padded behind an attention mask.

The logits processing follows transformers' processors in their order (repetition penalty, then temperature,
top-k, top-p), so greedy output is token-for-token HF `generate(do_sample=False)` on the same weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from ..errors import UserError
from .model import KVCache, Transformer
from ..progress import progress

if TYPE_CHECKING:
    from .loading import LoadedModel


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """HF semantics: for tokens already seen, divide a positive logit by `penalty`, multiply a negative."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def warp_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Temperature, then keep the top-k logits, then the smallest set whose probability reaches top_p
    (always at least one token); the rest become -inf."""
    if temperature != 1.0:
        logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cum <= (1 - top_p)
        drop_sorted[..., -1:] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _check_args(prompts, max_new_tokens, temperature, top_k, top_p, repetition_penalty, vocab_size) -> None:
    if max_new_tokens < 0:
        raise UserError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise UserError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")
    if repetition_penalty <= 0:
        raise UserError(f"repetition_penalty must be > 0 (1 = off), got {repetition_penalty}")
    if not prompts:
        raise UserError("no prompts given")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise UserError(f"prompt {i} is empty (no tokens)")
        bad = [t for t in p if not 0 <= t < vocab_size]
        if bad:
            raise UserError(
                f"prompt {i}: token id {bad[0]} outside the model's vocabulary (0..{vocab_size - 1})"
            )


@torch.inference_mode()
def generate(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    stop_ids: Sequence[int] = (),
    pad_id: int = 0,
    seed: int | None = None,
    show_progress: bool = False,
) -> list[list[int]]:
    """New tokens for each prompt (prompt and stop token excluded). temperature 0 = greedy; a `seed` makes
    sampling reproducible. Rows that hit a stop token stop; the batch ends when all have, or at the limit.
    `show_progress` draws a token bar on a terminal (the CLI's long runs)."""
    cfg = model.cfg
    _check_args(prompts, max_new_tokens, temperature, top_k, top_p, repetition_penalty, cfg.vocab_size)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    B, L = len(prompts), max(len(p) for p in prompts)
    if max_new_tokens == 0:
        return [[] for _ in range(B)]

    pad_in = pad_id if 0 <= pad_id < cfg.vocab_size else 0  # the id fed at padded/finished positions
    tokens = torch.full((B, L), pad_in, dtype=torch.long, device=device)
    mask = torch.zeros((B, L + max_new_tokens), dtype=torch.long, device=device)
    seen = torch.zeros((B, cfg.vocab_size), dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        row = torch.as_tensor(list(p), dtype=torch.long, device=device)
        tokens[i, L - len(p) :] = row
        mask[i, L - len(p) : L] = 1
        seen[i, row] = True
    generator = None
    if seed is not None and temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    stops = torch.as_tensor(list(stop_ids), dtype=torch.long, device=device)

    cache = KVCache(cfg, B, L + max_new_tokens, dtype, device)
    logits = model(tokens, cache=cache, attention_mask=mask[:, :L])[:, -1].float()
    out = torch.full((B, max_new_tokens), pad_in, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    bar = progress(total=max_new_tokens, desc="generate", unit="tok") if show_progress else None
    for step in range(max_new_tokens):
        if bar is not None:
            bar.update(1)
        logits = apply_repetition_penalty(logits, seen, repetition_penalty)
        if temperature == 0:
            nxt = logits.argmax(dim=-1)
        else:
            probs = warp_logits(logits, temperature, top_k, top_p).softmax(dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        nxt = torch.where(done, pad_in, nxt)
        out[:, step] = nxt
        done |= torch.isin(nxt, stops)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        seen[torch.arange(B, device=device), nxt] = True
        mask[:, L + step] = 1
        logits = model(nxt[:, None], cache=cache, attention_mask=mask[:, : L + step + 1])[:, -1].float()

    if bar is not None:
        bar.close()
    stop_set = set(int(s) for s in stops.tolist())
    results = []
    for row in out.tolist()[:B]:
        cut = next((j for j, t in enumerate(row) if t in stop_set), None)
        results.append(row[:cut] if cut is not None else row[: step + 1])
    return results


def generate_text(
    loaded: "LoadedModel",
    prompt_texts: Sequence[str],
    *,
    max_new_tokens: int,
    add_bos: bool | None = None,
    stop_ids: Sequence[int] | None = None,
    **sampling,
) -> list[str]:
    """Encode prompts with the model's tokenizer, generate, decode the new text. `add_bos=None` follows the
    tokenizer's own config; `stop_ids=None` stops on its eos (and generation_config.json's eos ids)."""
    tok = loaded.tokenizer
    if tok is None:
        raise UserError(f"{loaded.path}: no tokenizer next to the model; pass one (e.g. --tokenizer DIR)")
    if add_bos is None:
        add_bos = tok.adds_bos
    prompts = [tok.encode(t, add_bos=add_bos) for t in prompt_texts]
    new = generate(
        loaded.model,
        prompts,
        max_new_tokens=max_new_tokens,
        stop_ids=tok.stop_ids if stop_ids is None else stop_ids,
        pad_id=tok.pad_id if tok.pad_id is not None else 0,
        **sampling,
    )
    return [tok.decode(ids) for ids in new]
