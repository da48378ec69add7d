"""Torch-free readers for `llmctl data sft` output (MindSpeed's `PREFIX_packed_*_document` files).

Why torch-free: llmctl-data must import without torch (DESIGN.md); the trainer turns these numpy samples into
tensors and pads/collates them itself. Registered on the plugin bus as datasets "sft" and "dpo", reached by
`lookup("datasets", "sft")(path, seq_len=..., num_samples=..., seed=..., split=...)` like "gpt".

`attention_mask` is all ones for unpacked and `--pack` data; for `--neat-pack` it holds the segment ids
(1, 2, 3, ... per sample, 0 on padding), which is how MindSpeed stores them.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from llmctl.core.errors import UserError

from llmctl.core.mmidx import IndexedDataset, exists
from .preprocess import PAIR_KEYS, SFT_KEYS, output_path


def _base_prefix(prefix: str | os.PathLike) -> str:
    p = str(prefix)
    return p[: -len("_packed")] if p.endswith("_packed") else p


class _PackedFiles:
    """The per-key indexed datasets of one prefix, checked to hold the same number of equal-length samples."""

    keys: tuple[str, ...] = ()

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = _base_prefix(prefix)
        missing = [output_path(self.prefix, k) for k in self.keys if not exists(output_path(self.prefix, k))]
        if missing:
            raise UserError(f"data prefix '{self.prefix}': missing {', '.join(m + '.idx/.bin' for m in missing)} "
                            "(write them with `llmctl data sft`)")
        self.fields = {k: IndexedDataset(output_path(self.prefix, k)) for k in self.keys}
        sizes = {k: len(d) for k, d in self.fields.items()}
        if len(set(sizes.values())) != 1:
            raise UserError(f"data prefix '{self.prefix}': keys hold different sample counts {sizes}")
        for k, d in self.fields.items():
            if d.dtype != np.int32:
                raise UserError(f"{output_path(self.prefix, k)}: dtype {d.dtype}, expected int32")

    def __len__(self) -> int:
        return len(next(iter(self.fields.values())))

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {k: np.asarray(d[int(i)], dtype=np.int64) for k, d in self.fields.items()}

    def lengths(self, key: str) -> np.ndarray:
        return np.asarray(self.fields[key].sequence_lengths)


class SFTDataset(_PackedFiles):
    """`ds[i]` -> {"input_ids", "attention_mask", "labels"} int64 arrays of one sample (or one packed sequence)."""

    keys = SFT_KEYS

    @property
    def neat_packed(self) -> bool:
        """True when attention_mask holds segment ids (any value other than 1 appears)."""
        d = self.fields["attention_mask"]
        return any(bool((a != 1).any()) for a in (d[0 : len(d)] if len(d) else []))

    @property
    def sample_lengths(self) -> np.ndarray:
        return self.lengths("input_ids")


class PairwiseDataset(_PackedFiles):
    """`ds[i]` -> {"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"} int64 arrays."""

    keys = PAIR_KEYS


class SampledDataset:
    """`num_samples` samples drawn epoch by epoch, each epoch a fresh seeded permutation (no sample repeats
    within an epoch), so a trainer that asks for more samples than the data holds gets whole epochs."""

    def __init__(self, base: _PackedFiles, num_samples: int, seed: int):
        self.base, self.num_samples, self.seed = base, int(num_samples), int(seed)
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.num_samples

    def index(self, i: int) -> int:
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample {i} out of range for {self.num_samples}")
        n = len(self.base)
        epoch, k = divmod(int(i), n)
        if epoch not in self._perms:
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(n)
        return int(self._perms[epoch][k])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.base[self.index(i)]


def _resolve(path: str | os.PathLike, split: str, keys: Sequence[str]) -> str:
    p = _base_prefix(path)
    if split == "train":
        return p
    if split in ("val", "valid", "validation"):
        cand = f"{p}_val"
        if all(exists(output_path(cand, k)) for k in keys):
            return cand
        raise UserError(f"data prefix '{p}': no validation split (looked for {output_path(cand, keys[0])}.idx)")
    raise UserError(f"split must be 'train' or 'val', got '{split}'")


def _build(cls, path, seq_len, num_samples, seed, split):
    ds = cls(_resolve(path, split, cls.keys))
    if seq_len is not None:
        for k, d in ds.fields.items():
            longest = int(d.sequence_lengths.max()) if len(d) else 0
            if longest > seq_len:
                raise UserError(f"{output_path(ds.prefix, k)}: a sample of {longest} tokens is longer than "
                                f"seq_len {seq_len}; preprocess with --seq-length {seq_len}")
    if num_samples is None:
        return ds
    if num_samples < 1:
        raise UserError(f"num_samples must be >= 1, got {num_samples}")
    return SampledDataset(ds, num_samples, seed)


def build_sft_dataset(path: str | os.PathLike, seq_len: int | None = None, num_samples: int | None = None,
                      seed: int = 1234, split: str = "train") -> SFTDataset | SampledDataset:
    """The "sft" dataset: `path` is the --output-prefix given to `llmctl data sft` (with or without `_packed`);
    split "val" reads `PATH_val`. `num_samples=None`: one pass in file order; else seeded epochs."""
    return _build(SFTDataset, path, seq_len, num_samples, seed, split)


def build_dpo_dataset(path: str | os.PathLike, seq_len: int | None = None, num_samples: int | None = None,
                      seed: int = 1234, split: str = "train") -> PairwiseDataset | SampledDataset:
    """The "dpo" dataset: preference pairs written by a *PairwiseHandler; arguments as build_sft_dataset."""
    return _build(PairwiseDataset, path, seq_len, num_samples, seed, split)
