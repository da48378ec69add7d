"""Helpers for the trainer tests (a uniquely named module: `from conftest import` is ambiguous across the
test folders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class PatternDataset:
    """Arithmetic token patterns, one stride per source: learnable in a few steps, fully deterministic.
    Same interface as llmctl-data's build_gpt_dataset result."""

    def __init__(self, spec, seq_len, num_samples, seed, split="train"):
        prefixes = [tok for tok in spec.split() if not tok.replace(".", "", 1).isdigit()]  # "0.5 A 0.5 B"
        self.source_names = [str(p) for p in prefixes]
        self.seq, self.n, self.offset = seq_len, num_samples, 7_919 if split == "val" else 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        src = i % len(self.source_names)
        start = (i * 37 + self.offset) % 50
        tokens = (start + np.arange(self.seq + 1) * (src + 1)) % 50 + 3
        return {"tokens": tokens.astype(np.int64), "source": src}


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
