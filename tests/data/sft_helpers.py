"""Helpers for the `llmctl data sft` tests: a tiny ChatML tokenizer built in the test, conversations, runners.

A uniquely named module: `from conftest import` is ambiguous across test folders.
"""

from __future__ import annotations

import json
from pathlib import Path

from data_helpers import run_cli

IM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CONVERSATION = [
    {"role": "user", "content": "Name a primary colour."},
    {"role": "assistant", "content": "Red is a primary colour."},
    {"role": "user", "content": "And another one?"},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Thanks! 谢谢"},
    {"role": "assistant", "content": "不客气 — you are welcome."},
]


def tiny_chatml_tokenizer(out: Path) -> Path:
    """A byte-level BPE tokenizer (ChatML specials, eos <|im_end|>, pad <|endoftext|>) saved as an HF dir."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    texts = [m["content"] for m in CONVERSATION] * 3 + ["user assistant system instruction response"] * 3
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, min_frequency=1, special_tokens=IM_SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=IM_SPECIALS[1:])
    fast.save_pretrained(out)
    return out


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
