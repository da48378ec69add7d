"""Megatron "MMIDIDX" indexed dataset (`PREFIX.bin` + `PREFIX.idx`), numpy only, byte-compatible with megatron-core.

Layout of `.idx` (little endian): b"MMIDIDX\\x00\\x00", u64 version (1), u8 dtype code, u64 sequence count,
u64 document count (= documents + 1), int32 sequence lengths, int64 sequence byte pointers into `.bin`,
int64 document indices (sequence index where each document starts, then the total). `.bin` holds the tokens.

The builder streams tokens to disk and spills lengths to a side file, so memory stays flat whatever the corpus
size; it writes both files under temp names and renames `.bin` then `.idx` last (after removing any old `.idx`),
so a crash never leaves a pair that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import UserError

HEADER = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES: dict[int, type] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
CODE_OF = {np.dtype(v): k for k, v in DTYPE_CODES.items()}


def idx_path(prefix: str | os.PathLike) -> str:
    return f"{prefix}.idx"


def bin_path(prefix: str | os.PathLike) -> str:
    return f"{prefix}.bin"


def exists(prefix: str | os.PathLike) -> bool:
    return os.path.isfile(idx_path(prefix)) and os.path.isfile(bin_path(prefix))


def dtype_for_vocab(vocab_size: int) -> type:
    """uint16 when every id fits (vocab < 65 536), else int32 — the DESIGN.md contract."""
    return np.uint16 if vocab_size < 65536 else np.int32


class IndexedDataset:
    """Read-only, memory-mapped view of `PREFIX.bin/.idx`; `ds[i]` is sequence i as a numpy array (no copy)."""

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = str(prefix)
        ipath, bpath = idx_path(prefix), bin_path(prefix)
        if not exists(prefix):
            raise UserError(f"{self.prefix}: no indexed dataset here (need {ipath} and {bpath})")
        with open(ipath, "rb") as f:
            head = f.read(34)
        if len(head) < 34 or head[:9] != HEADER:
            raise UserError(f"{ipath}: not a Megatron MMIDIDX index file")
        (version,) = struct.unpack("<Q", head[9:17])
        if version != VERSION:
            raise UserError(f"{ipath}: unsupported MMIDIDX version {version}")
        code = head[17]
        if code not in DTYPE_CODES:
            raise UserError(f"{ipath}: unknown dtype code {code}")
        self.dtype = np.dtype(DTYPE_CODES[code])
        n_seq, n_doc = struct.unpack("<QQ", head[18:34])
        self._idx = np.memmap(ipath, mode="r", dtype=np.uint8)
        need = 34 + n_seq * 4 + n_seq * 8 + n_doc * 8
        if self._idx.size < need:
            raise UserError(f"{ipath}: truncated index ({self._idx.size} bytes, expected at least {need})")
        off = 34
        self.sequence_lengths = np.frombuffer(self._idx, dtype=np.int32, count=n_seq, offset=off)
        off += n_seq * 4
        self.sequence_pointers = np.frombuffer(self._idx, dtype=np.int64, count=n_seq, offset=off)
        off += n_seq * 8
        self.document_indices = np.frombuffer(self._idx, dtype=np.int64, count=n_doc, offset=off)
        bin_size = os.path.getsize(bpath)
        end = (
            int(self.sequence_pointers[-1]) + int(self.sequence_lengths[-1]) * self.dtype.itemsize
            if n_seq
            else 0
        )
        if end > bin_size:
            raise UserError(f"{bpath}: truncated data file ({bin_size} bytes, index needs {end})")
        self._bin = np.memmap(bpath, mode="r", dtype=np.uint8) if bin_size else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.sequence_lengths)

    def __getitem__(self, idx: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            if step != 1:
                raise ValueError("slices into an IndexedDataset must be contiguous")
            if stop <= start:
                return []
            lengths = self.sequence_lengths[start:stop]
            flat = np.frombuffer(
                self._bin,
                dtype=self.dtype,
                count=int(lengths.sum()),
                offset=int(self.sequence_pointers[start]),
            )
            return np.split(flat, np.cumsum(lengths)[:-1])
        return self.get(int(idx))

    def get(self, idx: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens `offset : offset+length` of sequence `idx` (the whole rest when length is None)."""
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f"sequence {idx} out of range for {len(self)} sequences")
        size = int(self.sequence_lengths[idx])
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise IndexError(f"tokens [{offset}, {offset + length}) out of range for a sequence of {size}")
        ptr = int(self.sequence_pointers[idx]) + offset * self.dtype.itemsize
        return np.frombuffer(self._bin, dtype=self.dtype, count=length, offset=ptr)

    @property
    def num_documents(self) -> int:
        return len(self.document_indices) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.sequence_lengths.sum(dtype=np.int64))


class IndexedDatasetBuilder:
    """Write `PREFIX.bin/.idx` in one streaming pass; call `finalize()` to publish, `abort()` to discard.

    By default one document is one sequence (`add_document(tokens)`); `add_document(tokens, lengths)` stores a
    document made of several sequences, and `add_item` + `end_document` mirror megatron-core's builder.
    """

    SPILL = 1 << 20  # lengths kept in memory before spilling to the side file

    def __init__(self, prefix: str | os.PathLike, dtype: type | np.dtype = np.int32):
        self.prefix = str(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in CODE_OF:
            raise UserError(f"unsupported token dtype {self.dtype}")
        Path(self.prefix).parent.mkdir(parents=True, exist_ok=True)
        tag = f"{os.getpid()}.tmp"
        self._tmp_bin = _hidden(bin_path(prefix), tag)
        self._tmp_idx = _hidden(idx_path(prefix), tag)
        self._tmp_len = _hidden(idx_path(prefix), "lengths." + tag)
        self._tmp_doc = _hidden(idx_path(prefix), "docs." + tag)
        self._bin = open(self._tmp_bin, "wb")
        self._len_file = open(self._tmp_len, "wb")
        self._doc_file = open(self._tmp_doc, "wb")
        self._lengths: list[np.ndarray] = []
        self._docs: list[np.ndarray] = []
        self._buffered = 0
        self._pending_item_docs: list[int] = []
        self.num_sequences = 0
        self.num_documents = 0
        self.num_tokens = 0
        self._closed = False
        self._max = np.iinfo(self.dtype).max if self.dtype.kind in "iu" else None

    # ---- adding ------------------------------------------------------------------------------------------
    def _write_tokens(self, arr: np.ndarray) -> np.ndarray:
        arr = np.asarray(arr)
        if arr.dtype != self.dtype:
            if self._max is not None and arr.size and arr.dtype.kind in "iu":
                hi = int(arr.max())
                if hi > self._max or int(arr.min()) < 0 and self.dtype.kind == "u":
                    raise UserError(
                        f"{self.prefix}: token id {hi} does not fit {self.dtype.name}; use --dtype int32"
                    )
            arr = arr.astype(self.dtype)
        self._bin.write(np.ascontiguousarray(arr).tobytes())
        self.num_tokens += arr.size
        return arr

    def _push(self, lengths: np.ndarray, doc_starts: np.ndarray) -> None:
        self._lengths.append(lengths.astype(np.int32, copy=False))
        self._docs.append(doc_starts.astype(np.int64, copy=False))
        self._buffered += len(lengths) + len(doc_starts)
        if self._buffered >= self.SPILL:
            self._spill()

    def _spill(self) -> None:
        for parts, f in ((self._lengths, self._len_file), (self._docs, self._doc_file)):
            for a in parts:
                f.write(a.tobytes())
            parts.clear()
        self._buffered = 0

    def add_document(self, tokens: Sequence[int] | np.ndarray, lengths: Sequence[int] | None = None) -> None:
        """Append one document (one sequence, or several when `lengths` splits it)."""
        arr = self._write_tokens(np.asarray(tokens))
        lens = np.array([arr.size] if lengths is None else lengths, dtype=np.int64)
        if int(lens.sum()) != arr.size:
            raise ValueError(f"lengths sum to {int(lens.sum())} but the document has {arr.size} tokens")
        self._push(lens, np.array([self.num_sequences], dtype=np.int64))
        self.num_sequences += len(lens)
        self.num_documents += 1

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append many one-sequence documents at once: `tokens` concatenated, `lengths` per document."""
        lengths = np.asarray(lengths, dtype=np.int64)
        arr = self._write_tokens(tokens)
        if int(lengths.sum()) != arr.size:
            raise ValueError(f"lengths sum to {int(lengths.sum())} but {arr.size} tokens were given")
        starts = self.num_sequences + np.arange(len(lengths), dtype=np.int64)
        self._push(lengths, starts)
        self.num_sequences += len(lengths)
        self.num_documents += len(lengths)

    def add_item(self, tokens: Sequence[int] | np.ndarray) -> None:
        """megatron-core style: add one sequence to the current document (close it with end_document)."""
        arr = self._write_tokens(np.asarray(tokens))
        if not self._pending_item_docs:
            self._pending_item_docs.append(self.num_sequences)
        self._push(np.array([arr.size], np.int64), np.zeros(0, np.int64))
        self.num_sequences += 1

    def end_document(self) -> None:
        start = self._pending_item_docs.pop() if self._pending_item_docs else self.num_sequences
        self._push(np.zeros(0, np.int64), np.array([start], np.int64))
        self.num_documents += 1

    def add_index(self, prefix: str | os.PathLike) -> None:
        """Append a whole existing dataset (same dtype), chunk by chunk."""
        other = IndexedDataset(prefix)
        if other.dtype != self.dtype:
            raise UserError(f"{prefix}: dtype {other.dtype} differs from {self.dtype}; cannot merge")
        base = self.num_sequences
        step = 1 << 20
        lengths = other.sequence_lengths
        for s in range(0, len(lengths), step):
            self._push(lengths[s : s + step].astype(np.int64), np.zeros(0, np.int64))
        docs = other.document_indices[:-1]
        for s in range(0, len(docs), step):
            self._push(np.zeros(0, np.int64), docs[s : s + step] + base)
        with open(bin_path(prefix), "rb") as f:
            while chunk := f.read(64 << 20):
                self._bin.write(chunk)
        self.num_sequences += len(other)
        self.num_documents += other.num_documents
        self.num_tokens += other.num_tokens

    # ---- publishing --------------------------------------------------------------------------------------
    def finalize(self) -> None:
        """Write the index and rename both files into place (`.idx` last)."""
        if self._closed:
            raise RuntimeError("builder already finalized or aborted")
        try:
            self._spill()
            for f in (self._bin, self._len_file, self._doc_file):
                f.flush()
                os.fsync(f.fileno())
                f.close()
            self._write_index()
            final_bin, final_idx = bin_path(self.prefix), idx_path(self.prefix)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(final_idx)  # an old .idx must never pair with the new .bin
            os.replace(self._tmp_bin, final_bin)
            os.replace(self._tmp_idx, final_idx)
        except BaseException:
            self.abort()
            raise
        finally:
            for p in (self._tmp_len, self._tmp_doc):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
        self._closed = True

    def _write_index(self) -> None:
        itemsize = self.dtype.itemsize
        n_seq = self.num_sequences
        n_doc = self.num_documents + 1
        chunk = 1 << 22
        with open(self._tmp_idx, "wb") as out:
            out.write(HEADER)
            out.write(struct.pack("<Q", VERSION))
            out.write(struct.pack("<B", CODE_OF[self.dtype]))
            out.write(struct.pack("<Q", n_seq))
            out.write(struct.pack("<Q", n_doc))
            lengths = np.memmap(self._tmp_len, dtype=np.int32, mode="r") if n_seq else np.zeros(0, np.int32)
            for s in range(0, n_seq, chunk):
                out.write(np.asarray(lengths[s : s + chunk]).tobytes())
            carry = 0
            for s in range(0, n_seq, chunk):
                part = np.asarray(lengths[s : s + chunk], dtype=np.int64) * itemsize
                ptrs = np.cumsum(part) - part + carry
                carry += int(part.sum())
                out.write(ptrs.astype(np.int64).tobytes())
            docs = np.memmap(self._tmp_doc, dtype=np.int64, mode="r") if n_doc > 1 else np.zeros(0, np.int64)
            for s in range(0, n_doc - 1, chunk):
                out.write(np.asarray(docs[s : s + chunk]).tobytes())
            out.write(struct.pack("<q", n_seq))
            out.flush()
            os.fsync(out.fileno())
            del lengths, docs

    def abort(self) -> None:
        """Close and delete every temp file; the final names are never touched."""
        for f in (self._bin, self._len_file, self._doc_file):
            with contextlib.suppress(Exception):
                f.close()
        for p in (self._tmp_bin, self._tmp_idx, self._tmp_len, self._tmp_doc):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        self._closed = True

    def __enter__(self) -> "IndexedDatasetBuilder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.finalize()
        else:
            self.abort()


def _hidden(path: str, tag: str) -> str:
    p = Path(path)
    return str(p.parent / f".{p.name}.{tag}")


def merge(prefixes: Iterable[str | os.PathLike], output_prefix: str | os.PathLike) -> IndexedDataset:
    """Concatenate datasets of one dtype into `output_prefix` (like Megatron's merge_datasets.py)."""
    prefixes = list(prefixes)
    if not prefixes:
        raise UserError("merge: no input prefixes")
    dtype = IndexedDataset(prefixes[0]).dtype
    with IndexedDatasetBuilder(output_prefix, dtype) as builder:
        for p in prefixes:
            builder.add_index(p)
    return IndexedDataset(output_prefix)
