"""Scoring helpers shared by every evaluator (built-in or third-party): answer-token ids, next-token scores
of the choices with a shared-prefix KV cache, greedy generation in length-sorted batches, letter extraction.

`score_choices` is the fast path of logits mode. Prompts of one group (one subject's few-shot prompts) share a
long token prefix; it is run once into a KVCache, the cache is copied out to the batch (`_expand_cache`), and
only each prompt's own suffix is fed, right-padded (a real token never attends to a later pad, so no mask is
needed). The shared prefix is the longest common prefix of the *token* sequences, so the result is the same
as scoring each full prompt on its own whatever the tokenizer does at the prefix boundary.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Hashable, Sequence

from llmctl.core.errors import UserError
from llmctl.core.progress import progress

if TYPE_CHECKING:
    import torch

    from llmctl.core.model_config import ModelConfig
    from llmctl.core.nn.model import KVCache, Transformer
    from llmctl.core.tokenizer import Tokenizer

#: Rows per batch never exceed this, whatever memory allows (longer batches stop paying off).
MAX_BATCH = 64
#: Working-memory budget for a batch on CPU, where free memory cannot be asked cheaply.
CPU_BUDGET_BYTES = 2 * 2**30


def encode_prompt(tokenizer: "Tokenizer", text: str) -> list[int]:
    """Prompt ids as `tokenizer(text)` gives them by default (BOS exactly when the tokenizer adds one), which
    is what the official scripts and a plain transformers loop feed the model."""
    return tokenizer.encode(text, add_bos=tokenizer.adds_bos)


def choice_token_ids(tokenizer: "Tokenizer", context: str, choices: Sequence[str]) -> list[int]:
    """For each continuation (e.g. " A" after "Answer:"), the first token it adds to `context` as the tokenizer
    splits the joined text, so a tokenizer that glues the space to the letter ("ĠA", "▁A") is handled. If
    joining re-tokenizes the context itself, falls back to the first token of the continuation alone."""
    ctx = tokenizer.encode(context)
    ids = []
    for choice in choices:
        full = tokenizer.encode(context + choice)
        if full[:len(ctx)] == ctx and len(full) > len(ctx):
            ids.append(full[len(ctx)])
        else:
            alone = tokenizer.encode(choice)
            if not alone:
                raise UserError(f"choice {choice!r} encodes to no token")
            ids.append(alone[0])
    if len(set(ids)) != len(ids):
        raise UserError(f"choices {list(choices)} share a first token ({ids}) after {context!r}: "
                        "logits mode cannot tell them apart; use --mode generate")
    return ids


def _common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    first, n = seqs[0], min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return n


def auto_batch_size(cfg: "ModelConfig", new_tokens: int, total_tokens: int, device: "torch.device",
                    dtype: "torch.dtype", logit_positions: int | None = None) -> int:
    """Rows that fit the memory budget: per row the fp32 logits of `logit_positions` (default: all new)
    positions, rough activations of `new_tokens`, attention scores against `total_tokens` keys and the KV
    cache. Budget: 60% of free accelerator memory, or CPU_BUDGET_BYTES on CPU."""
    import torch

    width = torch.finfo(dtype).bits // 8
    logit_positions = new_tokens if logit_positions is None else logit_positions
    per_row = (logit_positions * cfg.vocab_size * 4
               + new_tokens * (3 * cfg.ffn_hidden_size + 6 * cfg.hidden_size) * width
               + cfg.num_heads * new_tokens * total_tokens * 4
               + cfg.num_layers * 2 * cfg.kv_heads * cfg.head_dim * total_tokens * width)
    from llmctl.core.nn.device import free_memory_bytes

    free = free_memory_bytes(device)
    budget = CPU_BUDGET_BYTES if free is None else int(free * 0.6)
    return max(1, min(MAX_BATCH, budget // max(per_row, 1)))


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _expand_cache(prefix: "KVCache", rows: int) -> "KVCache":
    """A copy of a one-row cache repeated `rows` times, the prefix left intact for the next batch. Same result
    as `copy.copy(prefix).select(zeros(rows))`, but a broadcast copy: index_select with a repeated index is
    ~40x slower on CPU, and this runs once per batch."""
    cache = copy.copy(prefix)
    cache.k = [k.expand(rows, -1, -1, -1).contiguous() for k in prefix.k]
    cache.v = [v.expand(rows, -1, -1, -1).contiguous() for v in prefix.v]
    return cache


def score_choices(model: "Transformer", prompts: Sequence[Sequence[int]], choice_ids: Sequence[int], *,
                  groups: Sequence[Hashable] | None = None, batch_size: int | None = None,
                  desc: str = "scoring") -> list[list[float]]:
    """Next-token logits of `choice_ids` after each prompt (fp32), as a list per prompt in input order.
    `groups` (e.g. the subject of each prompt) says which prompts share a few-shot prefix worth caching;
    `batch_size` None picks one from memory (auto_batch_size)."""
    import torch

    from llmctl.core.nn.model import KVCache

    if not prompts:
        return []
    cfg = model.cfg
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    for i, p in enumerate(prompts):
        if not 0 < len(p) <= cfg.max_seq_len:
            raise ValueError(f"prompt {i} has {len(p)} tokens; must be 1..max_seq_len={cfg.max_seq_len}")
    by_group: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups if groups is not None else [None] * len(prompts)):
        by_group.setdefault(g, []).append(i)
    choice_index = torch.as_tensor(list(choice_ids), device=device)
    out: list[list[float] | None] = [None] * len(prompts)
    bar = progress(total=len(prompts), desc=desc, unit="q")
    with torch.inference_mode():
        for members in by_group.values():
            seqs = [prompts[i] for i in members]
            P = min(_common_prefix_len(seqs), min(len(s) for s in seqs) - 1)  # every suffix keeps >= 1 token
            order = sorted(range(len(members)), key=lambda j: -len(seqs[j]))  # longest first: OOM shows early
            longest = len(seqs[order[0]]) - P
            rows = batch_size or auto_batch_size(cfg, longest, P + longest, device, dtype, logit_positions=1)
            prefix_cache = None
            if P > 0:
                prefix_cache = KVCache(cfg, 1, P + longest, dtype, device)
                prefix = torch.as_tensor([list(seqs[0][:P])], device=device)
                model(prefix, cache=prefix_cache, logits_at=torch.zeros((1, 1), dtype=torch.long, device=device))
            for chunk in _batches(order, rows):
                lens = [len(seqs[j]) - P for j in chunk]
                tokens = torch.zeros((len(chunk), max(lens)), dtype=torch.long, device=device)
                for r, j in enumerate(chunk):
                    tokens[r, :lens[r]] = torch.as_tensor(list(seqs[j][P:]), device=device)
                cache = None if prefix_cache is None else _expand_cache(prefix_cache, len(chunk))
                # the vocab projection runs only where we read (a large share of a forward at a big vocab)
                last_pos = (torch.as_tensor(lens, device=device) - 1)[:, None]
                last = model(tokens, cache=cache, logits_at=last_pos)[:, 0]
                scores = last[:, choice_index].float().cpu().tolist()
                for r, j in enumerate(chunk):
                    out[members[j]] = scores[r]
                bar.update(len(chunk))
    bar.close()
    return out  # type: ignore[return-value]


def continuation_ids(tokenizer: "Tokenizer", context: str, continuation: str) -> list[int]:
    """The tokens `continuation` adds after `context` when the two are tokenized together (so a tokenizer
    that glues a leading space to the next word is handled); the continuation alone if joining changes how
    the context itself splits."""
    ctx = encode_prompt(tokenizer, context)
    full = encode_prompt(tokenizer, context + continuation)
    if full[:len(ctx)] == ctx and len(full) > len(ctx):
        return full[len(ctx):]
    return tokenizer.encode(continuation)


def score_continuations(model: "Transformer", requests: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                        batch_size: int | None = None, desc: str = "scoring") -> list[float]:
    """Sum of log-probabilities of each continuation given its context, (context_ids, continuation_ids) pairs
    in input order; batches of similar length, right-padded (a real token never attends to a later pad)."""
    import torch

    if not requests:
        return []
    param = next(model.parameters())
    seqs = [list(c) + list(x) for c, x in requests]
    for i, s in enumerate(seqs):
        if not 1 < len(s) <= model.cfg.max_seq_len or not requests[i][1] or not requests[i][0]:
            raise ValueError(f"request {i}: {len(s)} tokens; need a context, a continuation and <= max_seq_len")
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    longest = len(seqs[order[0]])
    rows = batch_size or auto_batch_size(model.cfg, longest, longest, param.device, param.dtype)
    out = [0.0] * len(seqs)
    bar = progress(total=len(seqs), desc=desc, unit="choice")
    with torch.inference_mode():
        for chunk in _batches(order, rows):
            width = max(len(seqs[i]) for i in chunk)
            tokens = torch.zeros((len(chunk), width), dtype=torch.long, device=param.device)
            for r, i in enumerate(chunk):
                tokens[r, :len(seqs[i])] = torch.as_tensor(seqs[i], device=param.device)
            logprobs = torch.log_softmax(model(tokens).float(), dim=-1)
            for r, i in enumerate(chunk):
                start, end = len(requests[i][0]), len(seqs[i])
                targets = tokens[r, start:end]
                out[i] = logprobs[r, start - 1:end - 1].gather(1, targets[:, None]).sum().item()
            bar.update(len(chunk))
    bar.close()
    return out


def generate_texts(model: "Transformer", tokenizer: "Tokenizer", prompts: Sequence[Sequence[int]], *,
                   max_new_tokens: int, batch_size: int | None = None, desc: str = "generating") -> list[str]:
    """Greedy continuations (decoded, special tokens skipped) of each prompt, batched by similar length so
    little left padding is fed; stops at the tokenizer's stop ids."""
    from llmctl.core.nn.generate import generate

    if not prompts:
        return []
    param = next(model.parameters())
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    longest = len(prompts[order[0]]) + max_new_tokens
    rows = batch_size or auto_batch_size(model.cfg, longest, longest, param.device, param.dtype)
    out: list[str] = [""] * len(prompts)
    bar = progress(total=len(prompts), desc=desc, unit="q")
    for chunk in _batches(order, rows):
        new = generate(model, [prompts[i] for i in chunk], max_new_tokens=max_new_tokens,
                       stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id if tokenizer.pad_id is not None else 0)
        for i, ids in zip(chunk, new):
            out[i] = tokenizer.decode(ids)
        bar.update(len(chunk))
    bar.close()
    return out


_CUE = re.compile(r"(?:答案|(?i:answer))\s*(?:(?:is|应该是|应为|是|为|选)\s*)?[:：]?\s*[(（]?([ABCD])(?![A-Za-z])")
_STANDALONE = re.compile(r"(?<![A-Za-z])([ABCD])(?![A-Za-z])")


def extract_letter(text: str) -> str | None:
    """The answer letter in a generated continuation, or None (counted as wrong). Rules, in order:
    1. cut at the first blank line after some text (a few-shot model goes on to write the next question);
    2. the text (leading space stripped) starts with A-D not followed by a letter ("B", "B.", "C) ...");
    3. the first A-D after an answer cue: "答案", "答案是/为/应该是/选", "Answer", "answer is", with an
       optional colon (: or ：) and bracket;
    4. the first A-D standing alone (not inside a word) anywhere in the text."""
    head = text.lstrip()
    cut = head.find("\n\n")
    if cut > 0:
        head = head[:cut]
    m = _STANDALONE.match(head)
    if m:
        return m.group(1)
    for pattern in (_CUE, _STANDALONE):
        m = pattern.search(head)
        if m:
            return m.group(1)
    return None
