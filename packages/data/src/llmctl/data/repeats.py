"""Repeats spaced apart: where copies of a document go in a source's sample order, and how far apart they are.

A source is repeated when the blend asks for more of it than it holds (epochs > 1), and a document can also
occur several times in one epoch (identical token sequences that deduplication kept). Megatron concatenates a
fresh permutation per epoch and then shuffles all samples together, so two copies can land side by side. Here,
when anything repeats, each group of identical documents (`doc_groups`: one per distinct token sequence) with
c copies in all the epochs gets times (i + u) / c, i = 0..c-1, for one random phase u per group, and documents
are laid out by time: the copies of a group are a 1/c of the stream apart, as far apart as the order allows
(one epoch apart for plain epoch repeats). Samples are then shuffled only inside windows of an eighth of that
spacing, so the shuffle moves copies by little compared with the distance between them.

`repeat_distances` measures the result on a built blend: the smallest distance, in tokens of the blended
stream, between the first samples of two copies of any document, next to the ideal for each source.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .hashing import splitmix64

HASH_CHUNK_TOKENS = 1 << 24


def doc_groups(data) -> np.ndarray:
    """Group id per sequence of an `IndexedDataset`: sequences with identical tokens share one (by a 64-bit
    hash of (position, token) pairs and the length), read in chunks of ~16M tokens."""
    lengths = np.asarray(data.sequence_lengths, dtype=np.int64)
    n = len(lengths)
    hashes = np.zeros(n, dtype=np.uint64)
    start = 0
    while start < n:
        stop = start + max(1, int(np.searchsorted(np.cumsum(lengths[start:]), HASH_CHUNK_TOKENS, "right")))
        stop = min(stop, n)
        lens = lengths[start:stop]
        flat = np.frombuffer(
            data._bin, dtype=data.dtype, count=int(lens.sum()), offset=int(data.sequence_pointers[start])
        ).astype(np.uint64)
        offsets = np.cumsum(lens) - lens
        pos = np.arange(len(flat), dtype=np.int64) - np.repeat(offsets, lens)
        with np.errstate(over="ignore"):
            mixed = splitmix64(flat * np.uint64(0x9E3779B97F4A7C15) ^ pos.astype(np.uint64))
            nonempty = lens > 0
            sums = np.zeros(len(lens), dtype=np.uint64)
            if nonempty.any():
                sums[nonempty] = np.add.reduceat(mixed, offsets[nonempty])
            hashes[start:stop] = splitmix64(sums ^ lens.astype(np.uint64))
        start = stop
    _, groups = np.unique(hashes, return_inverse=True)
    return groups.astype(np.int64)


def spread_order(groups: np.ndarray, epochs: int, rng: np.random.Generator) -> np.ndarray:
    """The document order over `epochs` passes with every group's copies evenly spaced (module docstring)."""
    n = len(groups)
    size = np.bincount(groups)  # documents per group
    by_group = np.argsort(groups, kind="stable")
    rank = np.empty(n, dtype=np.int64)  # a document's rank among its group's members
    rank[by_group] = np.arange(n) - (np.cumsum(size) - size)[groups[by_group]]
    phase = rng.random(len(size))
    k = size[groups]
    copy = rank[None, :] + k[None, :] * np.arange(epochs, dtype=np.int64)[:, None]  # [epochs, n]
    times = (copy + phase[groups][None, :]) / (k * epochs)[None, :]
    ties = rng.random(times.shape)
    order = np.lexsort((ties.ravel(), times.ravel()))
    return np.tile(np.arange(n, dtype=np.int64), epochs)[order]


def max_copies(groups: np.ndarray, epochs: int) -> int:
    return int(np.bincount(groups).max()) * epochs if len(groups) else 0


def local_shuffle(num_samples: int, window: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(num_samples) that moves each sample only within its window of `window`."""
    block = np.arange(num_samples, dtype=np.int64) // max(1, int(window))
    return np.lexsort((rng.random(num_samples), block)).astype(np.int64)


def repeat_distances(blend) -> dict[str, Any]:
    """Per source and overall: the smallest token distance between two copies of a document in the blended
    stream (None when nothing repeats), the ideal spacing and their ratio."""
    seq, total = blend.seq_len, len(blend)
    sources, overall = [], None
    for s, ds in enumerate(blend.datasets):
        positions = np.flatnonzero(
            np.asarray(blend.sample_sources) == s
        )  # blended position of the j-th sample of s
        groups = doc_groups(ds.data)
        lengths = np.asarray(ds.data.sequence_lengths, dtype=np.int64)[ds.doc_idx]
        first = (np.cumsum(lengths) - lengths) // seq  # the stream sample holding each copy's first token
        used = first < min(ds.num_samples, len(positions))
        inv = np.empty(ds.num_samples, dtype=np.int64)
        inv[np.asarray(ds.shuffle_idx)] = np.arange(ds.num_samples)
        j = inv[first[used]]
        keep = j < len(positions)
        where, g = positions[j[keep]], groups[np.asarray(ds.doc_idx)[used][keep]]
        order = np.lexsort((where, g))
        same = g[order][1:] == g[order][:-1]
        gaps = np.diff(where[order])[same]
        share = len(positions) / max(1, total)
        biggest = int(np.bincount(groups).max()) if len(groups) else 1
        ideal = ds.tokens_per_epoch / biggest / share if share else None
        entry = {
            "source": blend.source_names[s],
            "epochs": round(float(len(positions) * seq / ds.tokens_per_epoch), 4),
            "repeated_documents": int(len(np.unique(g[order][1:][same]))),
            "min_distance_tokens": int(gaps.min()) * seq if len(gaps) else None,
            "ideal_distance_tokens": int(ideal) if ideal and len(gaps) else None,
        }
        if entry["min_distance_tokens"] is not None:
            entry["ratio_to_ideal"] = round(entry["min_distance_tokens"] / ideal, 4)
            overall = (
                entry["min_distance_tokens"]
                if overall is None
                else min(overall, entry["min_distance_tokens"])
            )
        sources.append(entry)
    return {"min_distance_tokens": overall, "sources": sources}
