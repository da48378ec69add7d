"""Deterministic 64-bit hashing (numpy splitmix64/fmix64, blake2b for strings).

Python's built-in `hash` is salted per process, so anything that must agree across shards, workers and runs
(train/val split, sampling keys, dedup signatures) hashes with these instead.
"""

from __future__ import annotations

import hashlib

import numpy as np

U64 = np.uint64
_GOLDEN = U64(0x9E3779B97F4A7C15)
_M1 = U64(0xBF58476D1CE4E5B9)
_M2 = U64(0x94D049BB133111EB)


def stable_hash64(value: str | bytes) -> int:
    """64-bit blake2b of a string: stable across processes and Python versions."""
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser over a uint64 array (wrapping arithmetic is the point)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=U64) + _GOLDEN
        z = (z ^ (z >> U64(30))) * _M1
        z = (z ^ (z >> U64(27))) * _M2
        return z ^ (z >> U64(31))


def uniform01(keys: np.ndarray) -> np.ndarray:
    """Map uint64 keys to floats in [0, 1) through splitmix64 (53 high bits)."""
    return (splitmix64(keys) >> U64(11)).astype(np.float64) * (1.0 / (1 << 53))


def row_keys(source_hash: int, rows: np.ndarray, seed: int) -> np.ndarray:
    """One uint64 key per (file, row, seed): the unit of every per-document random decision."""
    with np.errstate(over="ignore"):
        base = splitmix64(np.array([source_hash ^ (seed * 0x2545F4914F6CDD1D & 0xFFFFFFFFFFFFFFFF)], U64))[0]
        return np.asarray(rows, dtype=U64) * _GOLDEN + base


def doc_uniform(source: str, rows: np.ndarray | list[int], seed: int) -> np.ndarray:
    """Uniform [0, 1) draw for each row of `source`, reproducible for a seed."""
    return uniform01(row_keys(stable_hash64(source), np.asarray(rows), seed))
