"""Raw document chunks for worker pools: the parent only frames records, the workers parse them.

Parsing JSON in the parent costs about a tenth of a core per worker's worth of tokenization, so for jsonl the
parent ships raw lines (with their file, row and line numbers) and `decode_chunk` parses them in the worker,
raising the same one-line errors as the readers (`file:line: not UTF-8`, `invalid JSON`, missing text key).
Parquet ships only the text column; other formats go through their registered reader. Row numbers follow
`readers.iter_documents` (blank jsonl lines are not rows), so the train/val split and document-level sharding
agree with every other stage.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from llmctl.core.errors import UserError

from ..pipeline import ShardPlan
from . import (
    _open_text,
    decode_line,
    parse_json_line,
    pick_text_key,
    read_jsonl,
    read_parquet,
    reader_for,
)


@dataclass
class Chunk:
    source: str
    kind: str  # "jsonl": raw lines to parse; "text": ready strings (None = empty)
    items: list
    rows: np.ndarray  # row number in the file of each item
    key: str
    linenos: list[int] | None = None


def _jsonl_records(path: str, text_key: str | None) -> tuple[str, Iterator[tuple[int, bytes, int]]]:
    """(text key, iterator of (row, raw line, line number)); blank lines are not rows."""
    first = next(iter(read_jsonl(path)), None)
    key = pick_text_key(first, text_key, path) if first is not None else (text_key or "text")

    def records() -> Iterator[tuple[int, bytes, int]]:
        row = -1
        with _open_text(path, binary=True) as f:
            for lineno, raw in enumerate(f, 1):
                if raw.strip():
                    row += 1
                    yield row, raw, lineno

    return key, records()


def _parquet_records(path: str, text_key: str | None) -> tuple[str, Iterator[tuple[int, object, int]]]:
    """(text key, iterator of (row, text, 0)), reading only the text column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.ParquetFile(path).schema_arrow.names
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    key = pick_text_key(dict.fromkeys(names), text_key, path)
    return key, ((row, rec[key], 0) for row, rec in enumerate(read_parquet(path, columns=[key])))


def _reader_records(path: str, text_key: str | None) -> tuple[str, Iterator[tuple[int, object, int]]]:
    """Any registered reader: (text key, iterator of (row, text, 0)), the key taken from the first row."""
    rows = reader_for(path)(path)
    first = next(rows, None)
    if first is None:
        return text_key or "text", iter(())
    key = pick_text_key(first, text_key, path)

    def records() -> Iterator[tuple[int, object, int]]:
        for row, rec in enumerate(itertools.chain([first], rows)):
            if key not in rec:
                raise UserError(f"{path}: row {row} has no text column '{key}'")
            yield row, rec[key], 0

    return key, records()


def iter_chunks(
    plan: ShardPlan, text_key: str | None, max_docs: int = 1024, max_bytes: int = 2 << 20
) -> Iterator[Chunk]:
    """Chunks of at most `max_docs` documents / `max_bytes` bytes of shard `plan`, in reading order."""
    number = -1  # document number across the shard's files, as iter_documents counts it
    for path in plan.files:
        reader = reader_for(path)
        if reader is read_jsonl:
            kind, (key, records) = "jsonl", _jsonl_records(path, text_key)
        elif reader is read_parquet:
            kind, (key, records) = "text", _parquet_records(path, text_key)
        else:
            kind, (key, records) = "text", _reader_records(path, text_key)
        buf: list[tuple[int, object, int]] = []
        size = 0
        for rec in records:
            number += 1
            if not plan.keeps(number):
                continue
            buf.append(rec)
            size += len(rec[1]) if isinstance(rec[1], (str, bytes)) else 0
            if len(buf) >= max_docs or size >= max_bytes:
                yield _chunk(path, kind, key, buf)
                buf, size = [], 0
        if buf:
            yield _chunk(path, kind, key, buf)


def _chunk(path: str, kind: str, key: str, buf: list[tuple[int, object, int]]) -> Chunk:
    rows, items, linenos = zip(*buf)
    return Chunk(
        path,
        kind,
        list(items),
        np.asarray(rows, dtype=np.int64),
        key,
        list(linenos) if kind == "jsonl" else None,
    )


def decode_chunk(chunk: Chunk) -> tuple[list[str], np.ndarray]:
    """(non-empty texts, mask of which items they were); bad records raise a UserError naming file:line."""
    texts: list[str] = []
    kept = np.zeros(len(chunk.items), dtype=bool)
    path, key = chunk.source, chunk.key
    for i, item in enumerate(chunk.items):
        if chunk.kind == "jsonl":
            lineno = chunk.linenos[i]
            obj = parse_json_line(path, lineno, decode_line(path, lineno, item))
            if key not in obj:
                raise UserError(f"{path}:{lineno}: no text column '{key}' (keys: {', '.join(obj) or 'none'})")
            text = obj[key]
            where = f"{path}:{lineno}"
        else:
            text = item
            where = f"{path}: row {int(chunk.rows[i])}"
        if text is None:
            continue
        if not isinstance(text, str):
            raise UserError(f"{where}: column '{key}' is {type(text).__name__}, expected text")
        if text.strip():
            texts.append(text)
            kept[i] = True
    return texts, kept
