"""Raw document chunks for worker pools: the parent only frames records, the workers parse them.

Parsing JSON in the parent costs about a tenth of a core per worker's worth of tokenization, so for jsonl the
parent ships raw lines (with their file, row and line numbers) and `decode_chunk` parses them in the worker,
raising the same one-line errors as the readers (`file:line: not UTF-8`, `invalid JSON`, missing text key).
Parquet ships only the text column; other formats go through their registered reader. Row numbers follow
`readers.iter_documents` (blank jsonl lines are not rows), so the train/val split and document-level sharding
agree with every other stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from llmctl.core.errors import UserError

from .pipeline import ShardPlan
from .readers import _open_text, pick_text_key, read_jsonl, read_parquet, reader_for


@dataclass
class Chunk:
    source: str
    kind: str                      # "jsonl": raw lines to parse; "text": ready strings (None = empty)
    items: list
    rows: np.ndarray               # row number in the file of each item
    key: str
    linenos: list[int] | None = None


def _first_json_row(path: str) -> dict:
    for row in read_jsonl(path):
        return row
    return {}


def iter_chunks(plan: ShardPlan, text_key: str | None, max_docs: int = 1024, max_bytes: int = 2 << 20
                ) -> Iterator[Chunk]:
    """Chunks of at most `max_docs` documents / `max_bytes` bytes of shard `plan`, in reading order."""
    number = -1
    for path in plan.files:
        reader = reader_for(path)
        items: list = []
        rows: list[int] = []
        linenos: list[int] = []
        size = 0

        def flush(kind: str, key: str) -> Chunk:
            chunk = Chunk(path, kind, list(items), np.asarray(rows, dtype=np.int64), key,
                          list(linenos) if kind == "jsonl" else None)
            items.clear()
            rows.clear()
            linenos.clear()
            return chunk

        if reader is read_jsonl:
            first = _first_json_row(path)
            if not first:
                continue
            key = pick_text_key(first, text_key, path)
            row = -1
            with _open_text(path, binary=True) as f:
                for lineno, raw in enumerate(f, 1):
                    if not raw.strip():
                        continue
                    row += 1
                    number += 1
                    if not plan.keeps(number):
                        continue
                    items.append(raw)
                    rows.append(row)
                    linenos.append(lineno)
                    size += len(raw)
                    if len(items) >= max_docs or size >= max_bytes:
                        size = 0
                        yield flush("jsonl", key)
            if items:
                yield flush("jsonl", key)
            continue
        if reader is read_parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                names = pq.ParquetFile(path).schema_arrow.names
            except (pa.ArrowException, OSError) as e:
                raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
            key = pick_text_key(dict.fromkeys(names), text_key, path)
            row = 0
            for rec in read_parquet(path, columns=[key]):
                number += 1
                if plan.keeps(number):
                    text = rec[key]
                    items.append(text)
                    rows.append(row)
                    size += len(text) if isinstance(text, str) else 0
                row += 1
                if len(items) >= max_docs or size >= max_bytes:
                    size = 0
                    yield flush("text", key)
            if items:
                yield flush("text", key)
            continue
        key = None
        for row, rec in enumerate(reader(path)):
            number += 1
            if not plan.keeps(number):
                continue
            key = key or pick_text_key(rec, text_key, path)
            if key not in rec:
                raise UserError(f"{path}: row {row} has no text column '{key}'")
            items.append(rec[key])
            rows.append(row)
            size += len(rec[key]) if isinstance(rec[key], str) else 0
            if len(items) >= max_docs or size >= max_bytes:
                size = 0
                yield flush("text", key)
        if items:
            yield flush("text", key or "text")


def decode_chunk(chunk: Chunk) -> tuple[list[str], np.ndarray]:
    """(non-empty texts, mask of which items they were); bad records raise a UserError naming file:line."""
    texts: list[str] = []
    kept = np.zeros(len(chunk.items), dtype=bool)
    path, key = chunk.source, chunk.key
    for i, item in enumerate(chunk.items):
        if chunk.kind == "jsonl":
            lineno = chunk.linenos[i]
            try:
                line = item.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{lineno}: not UTF-8 (byte 0x{item[e.start]:02x} at column {e.start + 1})"
                                ) from None
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
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
