"""Merge per-shard MMIDIDX datasets back into reading order, so the output does not depend on the shard count.

Each shard's dataset comes with `PREFIX.keys.npy`: one int64 key per document ((file index << 40) | row).
When the shards' keys, concatenated, are already ascending (files split into contiguous runs, or one shard) the
datasets are concatenated as they are; otherwise (documents dealt round-robin) the documents are gathered in
key order, a block of documents at a time with vectorised index arithmetic, so memory stays bounded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from llmctl.core.mmidx import IndexedDataset, IndexedDatasetBuilder, bin_path, idx_path

BLOCK_DOCS = 1 << 14


def _ramps(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """concat(arange(s, s + n) for s, n in zip(starts, lengths)) without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    before = np.cumsum(lengths) - lengths
    return np.repeat(starts - before, lengths) + np.arange(total, dtype=np.int64)


def merge_in_key_order(prefixes: Sequence[str], output_prefix: str, dtype) -> None:
    """Write `output_prefix` with every document of `prefixes`, ordered by their keys; removes the parts."""
    keys = [np.load(f"{p}.keys.npy") for p in prefixes]
    flat = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    if len(prefixes) == 1:
        for path in (bin_path, idx_path):
            os.replace(path(prefixes[0]), path(output_prefix))
    elif np.all(flat[1:] > flat[:-1]):
        with IndexedDatasetBuilder(output_prefix, dtype) as builder:
            for p in prefixes:
                builder.add_index(p)
    else:
        _gather(prefixes, keys, output_prefix, dtype)
    for p in prefixes:
        for f in (bin_path(p), idx_path(p), f"{p}.keys.npy"):
            Path(f).unlink(missing_ok=True)


def _tokens(prefix: str, dtype) -> np.ndarray:
    return np.memmap(bin_path(prefix), dtype=dtype, mode="r") if os.path.getsize(bin_path(prefix)) else np.zeros(0, dtype)


def _gather(prefixes: Sequence[str], keys: list[np.ndarray], output_prefix: str, dtype) -> None:
    """Documents in key order, a block at a time. The token files are mapped afresh for every block: pages of a
    mapping count as resident until it is dropped, so one long-lived mapping would grow with the corpus."""
    parts = [IndexedDataset(p) for p in prefixes]
    part_of = np.concatenate([np.full(len(k), i, np.int32) for i, k in enumerate(keys)])
    local = np.concatenate([np.arange(len(k), dtype=np.int64) for k in keys])
    order = np.argsort(np.concatenate(keys), kind="stable")
    with IndexedDatasetBuilder(output_prefix, dtype) as builder:
        for lo in range(0, len(order), BLOCK_DOCS):
            sel = order[lo : lo + BLOCK_DOCS]
            pid, loc = part_of[sel], local[sel]
            lengths = np.empty(len(sel), np.int64)
            for p in np.unique(pid):
                m = pid == p
                lengths[m] = parts[p].sequence_lengths[loc[m]]
            out_start = np.cumsum(lengths) - lengths
            buf = np.empty(int(lengths.sum()), dtype)
            for p in np.unique(pid):
                m = pid == p
                src = parts[p].sequence_pointers[loc[m]] // parts[p].dtype.itemsize
                tokens = _tokens(prefixes[p], parts[p].dtype)
                buf[_ramps(out_start[m], lengths[m])] = tokens[_ramps(src, lengths[m])]
                del tokens
            builder.add_documents(buf, lengths)
