"""Helpers for the staged-pretraining tests (a uniquely named module): small learnable corpora in Megatron's
format, one per domain, and the `tiny-staged` overrides that point the three stages at them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: (name, token stride range, id offset): each domain its own arithmetic patterns, learnable in a few steps
DOMAINS = {"web": (1, 3, 3), "code": (4, 6, 200), "books": (7, 9, 400), "hq": (1, 2, 600)}


def write_domain(prefix: Path, name: str, docs: int = 48, seed: int = 0) -> Path:
    """PREFIX_train / PREFIX_val: documents of arithmetic runs with the domain's strides and id range."""
    from llmctl.core.mmidx import IndexedDatasetBuilder

    lo, hi, offset = DOMAINS[name]
    rng = np.random.default_rng(seed + sum(map(ord, name)))
    for split in ("train", "val"):
        with IndexedDatasetBuilder(f"{prefix}_{split}", dtype=np.uint16) as builder:
            for _ in range(docs):
                start, stride, n = rng.integers(0, 150), rng.integers(lo, hi + 1), rng.integers(40, 160)
                builder.add_document(offset + (start + stride * np.arange(n)) % 150)
    return prefix


VOCAB = 760  # the word tokenizer's ids: every domain's (offset + 150 < 760)


def write_word_tokenizer(out: Path, vocab: int = VOCAB) -> Path:
    """An HF word-level tokenizer of exactly `vocab` ids: <pad> <s> </s>, then w3 ... (one id per word)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", *(f"w{i}" for i in range(3, vocab))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<pad>").save_pretrained(out)
    return out


def write_corpora(root: Path) -> dict[str, Path]:
    """The four domains, a tokenizer, and two held-out sets: `wiki` (web's _val split, .bin/.idx) and `code`
    (text: code-like word runs in a .txt file, tokenized by the run's tokenizer)."""
    corpora = {name: write_domain(root / name, name) for name in DOMAINS}
    corpora["tokenizer"] = write_word_tokenizer(root / "tokenizer")
    rng = np.random.default_rng(7)
    lines = [" ".join(f"w{200 + (s + k * d) % 150}" for k in range(int(n)))
             for s, d, n in zip(rng.integers(0, 150, 30), rng.integers(4, 7, 30), rng.integers(20, 60, 30))]
    corpora["code_text"] = root / "code_heldout.txt"
    corpora["code_text"].write_text("\n".join(lines) + "\n")
    return corpora


def staged_sets(corpora: dict[str, Path], run: Path, *extra: str) -> list[str]:
    """tiny-staged over the corpora: stage 1 = web + code, stage 2 (seq 128, RoPE base 1e5) = books + web,
    stage 3 (1-sqrt anneal) = hq; held-out PPL on wiki (.bin/.idx) and code (text) at every eval; checkpoints
    every 5 steps, a log record every step."""
    c = corpora
    return [f"data.path=0.5 {c['web']} 0.5 {c['code']}", f"data.tokenizer={c['tokenizer']}",
            f"stages.long.blend=0.7 {c['books']} 0.3 {c['web']}",
            f"stages.anneal.blend={c['hq']}",
            f"eval.sets={{wiki: {c['web']}_val, code: {c['code_text']}}}",
            f"checkpoint.dir={run / 'ckpt'}", "checkpoint.interval=5", f"logging.dir={run / 'logs'}",
            "logging.name=run", "eval.interval=10", "eval.iters=1", *extra]


def pretrain_here(overrides: list[str], resume: str | None = None, **kw):
    """tiny-staged in this process on one thread (the torchrun children's count: fp32 CPU results depend on
    it)."""
    import torch

    from llmctl.core.train import load_train_config, pretrain

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pretrain(load_train_config("tiny-staged", overrides), resume=resume, echo=lambda line: None, **kw)
    finally:
        torch.set_num_threads(threads)


def cli_args(overrides: list[str], *args: str) -> list[str]:
    return ["pretrain", "-c", "tiny-staged", *[a for s in overrides for a in ("--set", s)], *args]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "logs" / "run.jsonl").read_text().splitlines() if line.strip()]


def train_records(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in records(run) if "lr" in r and "event" not in r}


def events(run: Path, kind: str) -> list[dict]:
    return [r for r in records(run) if r.get("event") == kind]
