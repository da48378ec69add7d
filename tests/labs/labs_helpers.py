"""Helpers of the lab tests (a uniquely named module: `from conftest import` is ambiguous across test folders):
a tiny token corpus in Megatron MMIDIDX layout, and real tiny pretraining runs made in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def token_corpus(prefix: Path, vocab: int = 256, docs: int = 120, seed: int = 0) -> Path:
    """PREFIX_train / PREFIX_val of short arithmetic-pattern documents (learnable in a few steps)."""
    from llmctl.core.mmidx import IndexedDatasetBuilder

    rng = np.random.default_rng(seed)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", docs), ("val", max(docs // 10, 4))):
        with IndexedDatasetBuilder(f"{prefix}_{split}", dtype=np.uint16) as b:
            for _ in range(n):
                start, stride = rng.integers(3, vocab // 2), rng.integers(1, 4)
                b.add_document((start + stride * np.arange(rng.integers(40, 120))) % (vocab - 3) + 3)
    return prefix


def tiny_run(root: Path, name: str, data: Path, *overrides: str):
    """A real llmctl pretrain run of the tiny preset: ROOT/NAME/{ckpt,logs}; returns its PretrainResult."""
    from llmctl.core.train import load_train_config
    from llmctl.core.train.loop import pretrain

    cfg = load_train_config("tiny", [
        f"data.path={data}", "data.seq_length=32", "model.vocab_size=256", "model.max_seq_len=64",
        "train.train_iters=8", "train.global_batch_size=4", "train.micro_batch_size=2", "train.warmup_iters=1",
        "train.device=cpu", "eval.interval=4", "eval.iters=1", f"checkpoint.dir={root / name / 'ckpt'}",
        "checkpoint.interval=0", f"logging.dir={root / name / 'logs'}", "logging.interval=2",
        f"logging.name={name}", *overrides])
    return pretrain(cfg)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
