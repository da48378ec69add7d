"""Helpers for llmctl-eval tests: a tiny random HF Llama with the real minimind tokenizer (6400 vocab), the
benchmark fixtures, and the official prompt wording re-typed from the original scripts (hendrycks/test
evaluate.py, haonan-li/CMMLU mp_utils.py, hkust-nlp/ceval llama.py) so the parity tests build their prompts
without llmctl's code. A uniquely named module: `from conftest import` is ambiguous across test folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from real_data import FIXTURES

REPO = Path(__file__).resolve().parents[2]
MMLU_DIR = FIXTURES / "mmlu" / "data"
CMMLU_DIR = FIXTURES / "cmmlu" / "data"
CEVAL_DIR = FIXTURES / "ceval"
MINIMIND = FIXTURES / "tokenizers" / "minimind"


def build_hf_model(out_dir: Path, max_positions: int = 2048, seed: int = 0) -> Path:
    """A random LlamaForCausalLM (2 layers, hidden 64, GQA) + the minimind tokenizer, saved the HF way."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(MINIMIND))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                      initializer_range=0.2, rms_norm_eps=1e-6, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).float().save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    return out_dir


def read_rows(path: Path, header: bool) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[1:] if header else rows


def predictions(out_dir: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "predictions" / f"{task}.jsonl").read_text().splitlines()]


# ---- the official prompt wording, typed from the original scripts -------------------------------------------
def mmlu_example(row: list[str], with_answer: bool) -> str:
    text = row[0] + "".join(f"\n{letter}. {c}" for letter, c in zip("ABCD", row[1:5])) + "\nAnswer:"
    return text + (f" {row[5]}\n\n" if with_answer else "")


def mmlu_prompt(subject: str, dev: list[list[str]], row: list[str]) -> str:
    format_subject = "".join(" " + part for part in subject.split("_"))  # evaluate.py: leading space
    header = "The following are multiple choice questions (with answers) about {}.\n\n".format(format_subject)
    return header + "".join(mmlu_example(d, True) for d in dev) + mmlu_example(row, False)
