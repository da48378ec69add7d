"""Curriculum inside a stage: the samples of each source of a blend in order of a key — the length of the
documents they come from, or a per-document score — instead of the dataset's shuffle.

    stages:
      - {name: stable, iters: 1000, curriculum: {by: length, order: ascending, buckets: 8}}
      - {name: anneal, iters: 200, curriculum: {by: score, order: descending}}   # PREFIX.scores.npy per source

A sample's key is the token-weighted mean over the documents it holds (a packed sample spans several): their
length, or their score from `<prefix>.scores.npy` (one float per document of the source's resolved prefix, in
document order, e.g. a `llmctl data classify` column saved beside the tokenized data). `order` sorts by it;
`buckets: N` cuts the sorted samples into N equal buckets, taken in order, shuffled inside each (seeded).
Only the order within each source changes: the blend still interleaves its sources by weight at every step,
so the realised mix is the blend's. The order is a pure function of (data, seq_len, num_samples, seed,
curriculum), so a resumed run reads the same sample at every position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmctl.core.errors import UserError

BY = ("length", "score")
ORDERS = ("ascending", "descending")


def sample_keys(ds: Any, by: str) -> np.ndarray:
    """Per sample of one source's GPTDataset (in its shuffled order): the token-weighted mean document length
    or score of the documents it holds, vectorised over the dataset's indices."""
    lengths = np.asarray(ds.data.sequence_lengths, dtype=np.float64)
    if by == "length":
        value = lengths
    else:
        path = Path(f"{ds.prefix}.scores.npy")
        if not path.is_file():
            raise UserError(f"curriculum by score: {path} not found (one score per document of {ds.prefix})")
        value = np.asarray(np.load(path), dtype=np.float64).reshape(-1)
        if len(value) != len(lengths):
            raise UserError(f"{path}: {len(value)} scores for {len(lengths)} documents")
    doc = np.asarray(ds.doc_idx, dtype=np.int64)
    length_in_order, value_in_order = lengths[doc], value[doc]
    weighted = np.concatenate([[0.0], np.cumsum(length_in_order * value_in_order)])  # sum of len x value
    j = np.asarray(ds.shuffle_idx, dtype=np.int64)
    first, last = np.asarray(ds.sample_idx[j]), np.asarray(ds.sample_idx[j + 1])
    d0, o0, d1, o1 = first[:, 0], first[:, 1], last[:, 0], last[:, 1]
    same = d0 == d1
    # tokens taken from the first and last documents, and the full ones in between
    head = np.where(same, o1 - o0 + 1, length_in_order[d0] - o0)
    tail = np.where(same, 0, o1 + 1)
    middle = np.where(same, 0.0, weighted[d1] - weighted[np.minimum(d0 + 1, d1)])
    total = head * value_in_order[d0] + tail * value_in_order[d1] + middle
    return total / (ds.seq_len + 1)


def order(keys: np.ndarray, direction: str, buckets: int | None, seed: int) -> np.ndarray:
    """Positions of the samples in curriculum order (a permutation of range(len(keys)))."""
    n = len(keys)
    ranked = np.argsort(keys if direction == "ascending" else -keys, kind="stable")  # ties: the shuffle's order
    if not buckets or buckets <= 1:
        return ranked
    rng = np.random.Generator(np.random.PCG64(seed))
    bounds = np.linspace(0, n, min(buckets, n) + 1).round().astype(np.int64)
    return np.concatenate([rng.permutation(ranked[a:b]) for a, b in zip(bounds, bounds[1:])])


def check_curriculum(spec: dict[str, Any]) -> dict[str, Any]:
    by, direction = spec.get("by", "length"), spec.get("order", "ascending")
    if by not in BY or direction not in ORDERS:
        raise UserError(f"curriculum {spec}: 'by' is one of {', '.join(BY)}, 'order' one of {', '.join(ORDERS)}")
    return {"by": by, "order": direction, "buckets": spec.get("buckets")}


class CurriculumDataset:
    """A blended GPT dataset whose samples within each source are read in curriculum order."""

    def __init__(self, ds: Any, spec: dict[str, Any], seed: int):
        spec = check_curriculum(spec)
        self.ds, self.spec = ds, spec
        self.source_names, self.datasets, self.weights = ds.source_names, ds.datasets, ds.weights
        self.seq_len = ds.seq_len
        self.keys = [sample_keys(sub, spec["by"]) for sub in ds.datasets]
        self.maps = [order(keys, spec["order"], spec["buckets"], seed + s) for s, keys in enumerate(self.keys)]

    def __len__(self) -> int:
        return len(self.ds)

    @property
    def sample_sources(self) -> np.ndarray:
        return self.ds.sample_sources

    def _where(self, i: int) -> tuple[int, int]:
        s = int(self.ds._source[i])
        return s, int(self.maps[s][int(self.ds._index[i])])

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += len(self)
        s, k = self._where(i)
        return {"tokens": self.datasets[s][k], "source": s}

    def locate(self, i: int) -> dict[str, Any]:
        s, k = self._where(i)
        return {"position": i, "source": self.source_names[s], "prefix": self.datasets[s].prefix, "sample": k,
                "documents": [{"document": d, "from": a, "to": b} for d, a, b in self.datasets[s].documents(k)]}

    def key(self, i: int) -> float:
        """The curriculum key of sample i (what it is ordered by)."""
        s, k = self._where(i)
        return float(self.keys[s][k])
