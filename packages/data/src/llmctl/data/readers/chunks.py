"""Raw document chunks for worker pools: the parent only frames records, the workers parse them.

Parsing JSON in the parent costs about a tenth of a core per worker's worth of tokenization, so for jsonl the
parent ships raw lines (with their file, row and line numbers) and `decode_chunk` parses them in the worker.
Parquet ships only the text column; other formats go through their registered reader. Framing, numbering,
text-column choice and error messages are those of `rows.py`, the path `iter_documents` takes, so a bad row
reads the same in both modes and the train/val split and document-level sharding agree with every stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..pipeline import ShardPlan
from .rows import file_rows, file_text_key, record_of, text_of, where


@dataclass
class Chunk:
    source: str
    kind: str  # "jsonl": raw lines to parse; "text": ready strings (checked by `text_of` while framing)
    items: list
    rows: np.ndarray  # row number in the file of each item
    key: str
    linenos: list[int] | None = None


def iter_chunks(
    plan: ShardPlan, text_key: str | None, max_docs: int = 1024, max_bytes: int = 2 << 20
) -> Iterator[Chunk]:
    """Chunks of at most `max_docs` documents / `max_bytes` bytes of shard `plan`, in reading order."""
    number = -1  # document number across the shard's files, as iter_documents counts it
    for path in plan.files:
        key = file_text_key(path, text_key)
        kind, word, rows = file_rows(path, columns=[key])
        kind = "jsonl" if kind == "jsonl" else "text"
        buf: list[tuple[int, object, int]] = []
        size = 0
        for row, lineno, item in rows:
            number += 1
            if not plan.keeps(number):
                continue
            if kind == "text":
                item = text_of(item, key, where(path, row, lineno, word))
            buf.append((row, item, lineno))
            size += len(item)
            if len(buf) >= max_docs or size >= max_bytes:
                yield _chunk(path, kind, key, buf)
                buf, size = [], 0
        if buf:
            yield _chunk(path, kind, key, buf)


def _chunk(path: str, kind: str, key: str, buf: list[tuple[int, object, int]]) -> Chunk:
    rows, items, linenos = zip(*buf)
    return Chunk(path, kind, list(items), np.asarray(rows, dtype=np.int64), key,
                 list(linenos) if kind == "jsonl" else None)


def decode_chunk(chunk: Chunk) -> tuple[list[str], np.ndarray]:
    """(non-empty texts, mask of which items they were); bad records raise the reader path's UserError."""
    texts: list[str] = []
    kept = np.zeros(len(chunk.items), dtype=bool)
    path, key = chunk.source, chunk.key
    for i, item in enumerate(chunk.items):
        if chunk.kind == "jsonl":
            lineno = chunk.linenos[i]
            text = text_of(record_of(path, lineno, item), key, where(path, 0, lineno))
        else:
            text = item
        if text.strip():
            texts.append(text)
            kept[i] = True
    return texts, kept
