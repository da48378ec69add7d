"""GPT pretraining dataset over blended MMIDIDX sources: fixed-length packed samples, numpy only (no torch).

Per source (like Megatron's GPTDataset): documents are shuffled per epoch into a document index, the token
stream is cut into samples of `seq_len + 1` tokens (consecutive samples share one token, so inputs and targets
are the same sample shifted by one), and the sample order is shuffled. When a source repeats (more than one
epoch, or identical documents inside it) the copies of a document are instead spread evenly over the stream
and samples shuffle only locally (`repeats.py`), so two copies never sit side by side. These indices are
cached as `.npy` next to the data (`<data dir>/llmctl_index_cache/`, keyed by a hash of the data and
parameters, written atomically so concurrent ranks can race safely). Sources are then interleaved by weight
(`blend.blend_indices`). Everything is a pure function of (data, seq_len, num_samples, seed): sample i is the
same on every run, so `iter_from(k)` resumes exactly where an uninterrupted run would be.

    from llmctl.data.gpt_dataset import build_gpt_dataset
    ds = build_gpt_dataset("0.7 data/zh 0.3 data/en", seq_len=2048, num_samples=10_000, seed=1234, split="train")
    ds[0] -> {"tokens": int64 array [seq_len + 1], "source": 0}
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from llmctl.core.errors import UserError
from llmctl.core.io import atomic_path

from .blend import BlendSpec, blend_indices, normalise_weights, parse_blend, resolve_prefix
from .repeats import doc_groups, local_shuffle, max_copies, spread_order
from llmctl.core.mmidx import IndexedDataset, idx_path

CACHE_VERSION = 2  # 2: repeats spread apart (repeats.py)


def _cache_dir(prefix: str, cache_dir: str | os.PathLike | None) -> Path:
    """Next to the data when writable, else $LLMCTL_CACHE (or ~/.cache/llmctl) for read-only data dirs."""
    if cache_dir is not None:
        return Path(cache_dir)
    here = Path(prefix).resolve().parent / "llmctl_index_cache"
    try:
        here.mkdir(parents=True, exist_ok=True)
        if os.access(here, os.W_OK):
            return here
    except OSError:
        pass
    return Path(os.environ.get("LLMCTL_CACHE", Path.home() / ".cache" / "llmctl")) / "index_cache"


class GPTDataset:
    """One source: `ds[i]` is sample i (int64, `seq_len + 1` tokens) of a shuffled, multi-epoch packing."""

    def __init__(
        self,
        prefix: str,
        seq_len: int,
        num_samples: int,
        seed: int = 1234,
        cache_dir: str | os.PathLike | None = None,
    ):
        if seq_len < 1:
            raise UserError(f"seq_len must be >= 1, got {seq_len}")
        self.prefix = str(prefix)
        self.seq_len = int(seq_len)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.data = IndexedDataset(prefix)
        self.tokens_per_epoch = self.data.num_tokens
        if self.tokens_per_epoch <= 1:
            raise UserError(f"{prefix}: dataset has {self.tokens_per_epoch} tokens, too few to sample from")
        self.num_epochs = max(1, -(-(self.num_samples * self.seq_len + 1) // self.tokens_per_epoch))
        self.doc_idx, self.sample_idx, self.shuffle_idx = self._load_or_build(
            _cache_dir(self.prefix, cache_dir)
        )

    # ---- indices ------------------------------------------------------------------------------------------
    def _key(self) -> str:
        st = os.stat(idx_path(self.prefix))
        desc = {
            "v": CACHE_VERSION,
            "idx_bytes": st.st_size,
            "docs": len(self.data),
            "tokens": self.tokens_per_epoch,
            "seq_len": self.seq_len,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "prefix": os.path.basename(self.prefix),
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]

    def _load_or_build(self, cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stem = f"{os.path.basename(self.prefix)}.{self._key()}"
        paths = [cache / f"{stem}.{name}.npy" for name in ("doc_idx", "sample_idx", "shuffle_idx")]
        if all(p.is_file() for p in paths):
            try:
                return tuple(np.load(p, mmap_mode="r") for p in paths)  # type: ignore[return-value]
            except (OSError, ValueError):
                pass  # a damaged cache file: rebuild it
        arrays = self._build(cache)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            for p, a in zip(paths, arrays):
                with atomic_path(p) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, a)
        except OSError:
            pass  # caching is an optimisation; an unwritable cache dir only costs a rebuild next time
        return arrays

    def _groups(self, cache: Path) -> np.ndarray:
        """Which documents are identical (`repeats.doc_groups`), cached per data file: hashing reads all."""
        st = os.stat(idx_path(self.prefix))
        key = hashlib.sha256(json.dumps([st.st_size, st.st_mtime_ns, len(self.data), self.tokens_per_epoch])
                             .encode()).hexdigest()[:16]
        path = cache / f"{os.path.basename(self.prefix)}.{key}.doc_groups.npy"
        try:
            return np.load(path)
        except (OSError, ValueError):
            pass
        groups = doc_groups(self.data)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, groups)
        except OSError:
            pass
        return groups

    def _build(self, cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.Generator(np.random.PCG64(self.seed))
        n_docs = len(self.data)
        idx_dtype = np.int32 if n_docs < 2**31 else np.int64
        groups = self._groups(cache)
        copies = max_copies(groups, self.num_epochs)
        if copies <= 1:  # nothing repeats: Megatron's order (a permutation of documents, then of samples)
            doc_idx = rng.permutation(n_docs).astype(idx_dtype)
        else:
            doc_idx = spread_order(groups, self.num_epochs, rng).astype(idx_dtype)
        lengths = np.asarray(self.data.sequence_lengths, dtype=np.int64)[doc_idx]
        ends = np.cumsum(lengths)
        positions = np.arange(self.num_samples + 1, dtype=np.int64) * self.seq_len
        where = np.searchsorted(ends, positions, side="right")
        offsets = positions - (ends[where] - lengths[where])
        sample_idx = np.stack([where, offsets], axis=1).astype(np.int64)
        if copies <= 1:
            shuffle_idx = rng.permutation(self.num_samples).astype(np.int64)
        else:  # copies are len(stream) / copies apart: shuffle within an eighth of that
            spacing = self.num_epochs * self.tokens_per_epoch / self.seq_len / copies
            shuffle_idx = local_shuffle(self.num_samples, int(spacing // 8), rng)
        return doc_idx, sample_idx, shuffle_idx

    # ---- access -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample {i} out of range for {self.num_samples}")
        j = int(self.shuffle_idx[i])
        d0, o0 = (int(x) for x in self.sample_idx[j])
        d1, o1 = (int(x) for x in self.sample_idx[j + 1])
        if d0 == d1:
            return self.data.get(int(self.doc_idx[d0]), o0, o1 - o0 + 1).astype(np.int64)
        parts = [self.data.get(int(self.doc_idx[d0]), o0)]
        parts += [self.data.get(int(self.doc_idx[d])) for d in range(d0 + 1, d1)]
        parts.append(self.data.get(int(self.doc_idx[d1]), 0, o1 + 1))
        return np.concatenate(parts).astype(np.int64)

    def documents(self, i: int) -> list[tuple[int, int, int]]:
        """(document index in the prefix, first token, end token) of every document sample i reads, in order:
        which documents a training step saw (`llmctl data inspect --positions`)."""
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample {i} out of range for {self.num_samples}")
        j = int(self.shuffle_idx[i])
        (d0, o0), (d1, o1) = (tuple(int(x) for x in self.sample_idx[k]) for k in (j, j + 1))
        docs = [int(self.doc_idx[d]) for d in range(d0, d1 + 1)]
        lengths = self.data.sequence_lengths
        spans = [(doc, 0, int(lengths[doc])) for doc in docs]
        spans[0] = (docs[0], o0, spans[0][2])
        spans[-1] = (docs[-1], spans[-1][1], o1 + 1) if d0 != d1 else (docs[0], o0, o1 + 1)
        return spans


class BlendedGPTDataset:
    """Several GPTDatasets interleaved by weight; every sample says which source it came from."""

    def __init__(
        self,
        names: list[str],
        datasets: list[GPTDataset],
        weights: np.ndarray,
        source_of: np.ndarray,
        index_in_source: np.ndarray,
    ):
        self.source_names = names
        self.datasets = datasets
        self.weights = weights
        self._source = source_of
        self._index = index_in_source
        self.seq_len = datasets[0].seq_len if datasets else 0

    def __len__(self) -> int:
        return len(self._source)

    @property
    def sample_sources(self) -> np.ndarray:
        """Which source each sample comes from, in sample order (what a blend report counts)."""
        return self._source

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)}")
        s = int(self._source[i])
        return {"tokens": self.datasets[s][int(self._index[i])], "source": s}

    def locate(self, i: int) -> dict[str, Any]:
        """Where sample i of the blend comes from: its source, the sample within that source, and the
        documents (index in the source's prefix, token span) it holds."""
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)}")
        s, k = int(self._source[i]), int(self._index[i])
        return {"position": i, "source": self.source_names[s], "prefix": self.datasets[s].prefix, "sample": k,
                "documents": [{"document": d, "from": a, "to": b} for d, a, b in self.datasets[s].documents(k)]}

    def iter_from(self, offset: int = 0) -> Iterator[dict[str, Any]]:
        """Samples offset, offset+1, ... (resume after `offset` consumed samples)."""
        for i in range(offset, len(self)):
            yield self[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iter_from(0)


def build_gpt_dataset(
    spec: BlendSpec,
    seq_len: int,
    num_samples: int | None,
    seed: int = 1234,
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    curriculum: dict | None = None,
) -> BlendedGPTDataset:
    """A blended GPT dataset of `num_samples` samples of `seq_len + 1` tokens over the prefixes in `spec`.

    `spec`: Megatron blend string ("0.7 zh 0.3 en"), list, mapping or YAML path (see llmctl.data.blend);
    `split`: "train" or "val", resolved per prefix by `blend.resolve_prefix`;
    `num_samples=None`: one epoch, i.e. as many samples as fit without repeating any source's tokens;
    `curriculum` ({by: length | score, order, buckets}): each source's samples in that order (curriculum.py).
    """
    if num_samples is not None and num_samples < 1:
        raise UserError(f"num_samples must be >= 1, got {num_samples}")
    entries = parse_blend(spec)
    names = [p for p, _w in entries]
    resolved = [resolve_prefix(p, split) for p in names]
    sizes = [IndexedDataset(p).num_tokens for p in resolved]
    weights = normalise_weights([w for _p, w in entries], sizes)
    if num_samples is None:
        per_epoch = [(t - 1) // seq_len for t in sizes]
        # the blend gives each source within one sample of w * n, hence the - 1
        num_samples = int(
            min((e - 1) / w if len(sizes) > 1 else e for e, w in zip(per_epoch, weights) if w > 0)
        )
        if num_samples < 1:
            raise UserError(
                f"{', '.join(resolved)}: fewer than seq_len + 1 = {seq_len + 1} tokens per source"
            )
    source_of, index_in_source = blend_indices(weights, num_samples)
    per_source = np.bincount(source_of, minlength=len(names))
    datasets = []
    for s, prefix in enumerate(resolved):
        n = max(1, int(per_source[s]))  # ranks within a source are 0..count-1
        datasets.append(GPTDataset(prefix, seq_len, n, seed, cache_dir))
    blended = BlendedGPTDataset(names, datasets, weights, source_of, index_in_source)
    if curriculum:
        from .curriculum import CurriculumDataset

        return CurriculumDataset(blended, curriculum, seed)
    return blended
