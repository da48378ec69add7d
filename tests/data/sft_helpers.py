"""Helpers for the `llmctl data sft` tests: a tiny ChatML tokenizer built in the test, conversations, runners.

A uniquely named module: `from conftest import` is ambiguous across test folders.
"""

from __future__ import annotations

import json
from pathlib import Path

from chatml_tokenizer import chatml_bpe_tokenizer
from data_helpers import run_cli

CONVERSATION = [
    {"role": "user", "content": "Name a primary colour."},
    {"role": "assistant", "content": "Red is a primary colour."},
    {"role": "user", "content": "And another one?"},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Thanks! 谢谢"},
    {"role": "assistant", "content": "不客气 — you are welcome."},
]


def tiny_chatml_tokenizer(out: Path) -> Path:
    """The ChatML BPE tokenizer of the conversation above, saved as an HF dir."""
    texts = [m["content"] for m in CONVERSATION] * 3 + ["user assistant system instruction response"] * 3
    return chatml_bpe_tokenizer(out, texts, vocab_size=400)


def write_json(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def run_sft(inp, tokenizer, prefix, *extra):
    """`llmctl data sft --input INP --tokenizer-name-or-path TOK --output-prefix PREFIX EXTRA...` in-process."""
    return run_cli(["data", "sft", "--input", inp, "--tokenizer-name-or-path", tokenizer,
                    "--output-prefix", prefix, *extra])


def read_sft(prefix) -> list[dict]:
    from llmctl.data.sft.datasets import SFTDataset

    ds = SFTDataset(prefix)
    return [ds[i] for i in range(len(ds))]
