"""Fitting samples to the sequence length, and packing several samples into one sequence.

Why here and not in training: MindSpeed stores packed data already packed (`--pack` / `--neat-pack`), so the
files are the contract. The rules, as MindSpeed has them: a packed sequence holds at most `seq_length - 1`
sample tokens (one reserved) and is padded to exactly `seq_length` with the pad id, label -100 and
attention_mask 1 (`--pack`) or 0 (`--neat-pack`, where attention_mask holds the segment ids 1, 2, 3, ... of
the samples so training keeps attention inside each sample). Unpacked samples are at most `seq_length - 1`
tokens too, one per document; training pads them dynamically.

Unlike MindSpeed, which drops over-long samples (or cuts prompt and response proportionally), an over-long
sample loses prompt tokens first, earliest first (the oldest context goes, the answer and the turn leading
into it stay); only a sample whose trained tokens alone exceed the limit is dropped, and both are counted.
"""

from __future__ import annotations

import bisect
from typing import Iterator, Sequence

import numpy as np

IGNORE_INDEX = -100


def fit(ids: Sequence[int], labels: Sequence[int], max_len: int | None) -> tuple[list[int], list[int], str]:
    """(ids, labels, status) with status "ok", "truncated" or "dropped" (the trained tokens alone are too long)."""
    ids, labels = list(ids), list(labels)
    if max_len is None or len(ids) <= max_len:
        return ids, labels, "ok"
    excess = len(ids) - max_len
    untrained = [i for i, lab in enumerate(labels) if lab == IGNORE_INDEX]
    if len(untrained) < excess:
        return ids, labels, "dropped"
    cut = set(untrained[:excess])
    keep = [i for i in range(len(ids)) if i not in cut]
    return [ids[i] for i in keep], [labels[i] for i in keep], "truncated"


def prompt_length(labels: Sequence[int]) -> int:
    """Tokens before the final trained run (the last answer): a pairwise sample's prompt."""
    j = len(labels)
    while j > 0 and labels[j - 1] != IGNORE_INDEX:
        j -= 1
    return j


def fit_pair(chosen: tuple[list[int], list[int]], rejected: tuple[list[int], list[int]],
             max_len: int | None) -> tuple[tuple, tuple, str]:
    """Fit both halves of a preference pair by cutting the same (shared) prompt tokens from each."""
    (c_ids, c_lab), (r_ids, r_lab) = chosen, rejected
    if max_len is None or max(len(c_ids), len(r_ids)) <= max_len:
        return chosen, rejected, "ok"
    excess = max(len(c_ids), len(r_ids)) - max_len
    p = prompt_length(c_lab)
    if p < excess:
        return chosen, rejected, "dropped"
    return (c_ids[excess:], c_lab[excess:]), (r_ids[excess:], r_lab[excess:]), "truncated"


def greedy_knapsack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of total length <= capacity, as LLaMA-Factory/MindSpeed do:
    each bin is filled by repeatedly taking the longest remaining sample that still fits (ties: lowest index).
    Deterministic, so a test can recompute which samples share a packed sequence."""
    if any(n > capacity for n in lengths):
        raise ValueError(f"a sample of {max(lengths)} tokens exceeds the knapsack capacity {capacity}")
    remaining = sorted((int(n), -i) for i, n in enumerate(lengths))  # longest last; ties: lowest index last
    bins: list[list[int]] = []
    while remaining:
        room, current = capacity, []
        while remaining:
            pos = bisect.bisect_right(remaining, (room, 1)) - 1  # longest length <= room
            if pos < 0:
                break
            n, neg = remaining.pop(pos)
            current.append(-neg)
            room -= n
        bins.append(current)
    return bins


def pack(samples: Sequence[tuple[Sequence[int], Sequence[int]]], seq_length: int, pad_id: int,
         neat: bool) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]]:
    """(input_ids, attention_mask, labels, sample indices) for each packed sequence of exactly `seq_length`."""
    for members in greedy_knapsack([len(ids) for ids, _ in samples], seq_length - 1):
        ids = np.full(seq_length, pad_id, dtype=np.int32)
        mask = np.full(seq_length, 0 if neat else 1, dtype=np.int32)
        labels = np.full(seq_length, IGNORE_INDEX, dtype=np.int32)
        pos = 0
        for seg, k in enumerate(members, 1):
            s_ids, s_lab = samples[k]
            n = len(s_ids)
            ids[pos : pos + n] = s_ids
            labels[pos : pos + n] = s_lab
            mask[pos : pos + n] = seg if neat else 1
            pos += n
        yield ids, mask, labels, members
