"""Corpus readers by format (parquet, jsonl, json, csv, txt) and the streaming document source built on them.

A reader is a callable `read(path) -> Iterator[dict]` yielding rows, registered by format name through the
`register_readers` hook with the file suffixes it handles. `iter_documents` turns the rows of a shard's files
into `Document`s, checks the text column, and counts (rather than fails on) empty documents.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from llmctl.core.errors import UserError

from ..pipeline import Document, ShardPlan, StageStats, nbytes, plan_shard

Reader = Callable[[str], Iterator[dict]]

PARQUET_BATCH_ROWS = 2048


def _open_text(path: str, binary: bool = False):
    if path.endswith(".gz"):
        return gzip.open(path, "rb") if binary else io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, "rb") if binary else open(path, encoding="utf-8", newline="")


def read_parquet(path: str, columns: Sequence[str] | None = None) -> Iterator[dict]:
    """Stream a parquet file one record batch at a time; a corrupt file is a one-line UserError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        batches = pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=list(columns) if columns else None)
        for batch in batches:
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable parquet file ({first})") from None


read_parquet.extensions = (".parquet", ".pq")


def decode_line(path: str, lineno: int, raw: bytes) -> str:
    """One raw line as text; shared by the line readers and `chunks.decode_chunk` so errors read the same."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path}:{lineno}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
        ) from None


def parse_json_line(path: str, lineno: int, line: str) -> dict:
    """One jsonl line as a dict; a bad line is a UserError naming file:line."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl(path: str) -> Iterator[dict]:
    """One JSON object per line; a non-UTF-8 or invalid line is a UserError naming file:line."""
    with _open_text(path, binary=True) as f:
        for lineno, raw in enumerate(f, 1):
            line = decode_line(path, lineno, raw)
            if not line.strip():
                continue
            yield parse_json_line(path, lineno, line)


read_jsonl.extensions = (".jsonl", ".jsonl.gz", ".ndjson")


def read_json(path: str) -> Iterator[dict]:
    """A JSON list of objects (or an object holding one list of objects), streamed item by item with ijson,
    so a whole-file `.json` corpus takes the memory of one item, not of the file."""
    import ijson

    def items(prefix: str) -> Iterator[dict]:
        with _open_text(path, binary=True) as f:
            for i, obj in enumerate(ijson.items(f, prefix, use_float=True)):
                if not isinstance(obj, dict):
                    raise UserError(f"{path}: item {i} is {type(obj).__name__}, expected an object")
                yield obj

    try:
        with _open_text(path, binary=True) as f:
            head = next(ijson.parse(f), None)
        if head is None:
            raise UserError(f"{path}: expected a JSON list of objects, got nothing")
        if head[1] == "start_array":
            yield from items("item")
        elif head[1] == "start_map":
            yield from items(_only_list_key(path))
        else:
            raise UserError(f"{path}: expected a JSON list of objects, got {head[1]}")
    except ijson.JSONError as e:
        raise UserError(f"{path}: invalid JSON ({str(e).splitlines()[0][:200]})") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 (byte offset {e.start})") from None


def _only_list_key(path: str) -> str:
    """The key of the one list of a top-level object (`{"data": [...]}`), found in a streaming pass."""
    import ijson

    lists, depth = [], 0
    with _open_text(path, binary=True) as f:
        for prefix, event, value in ijson.parse(f):
            if event in ("start_map", "start_array"):
                depth += 1
                if depth == 2 and event == "start_array":
                    lists.append(prefix)
            elif event in ("end_map", "end_array"):
                depth -= 1
    if len(lists) != 1:
        raise UserError(f"{path}: expected a JSON list of objects (or an object with exactly one list)")
    return f"{lists[0]}.item"


read_json.extensions = (".json", ".json.gz")


def read_csv(path: str) -> Iterator[dict]:
    """CSV with a header row; the text column is chosen by --text-key like any other format. Lines are decoded
    one at a time, so a non-UTF-8 byte is named by file:line as in jsonl."""

    def lines() -> Iterator[str]:
        with _open_text(path, binary=True) as f:
            for lineno, raw in enumerate(f, 1):
                yield decode_line(path, lineno, raw)

    try:
        yield from csv.DictReader(lines())
    except csv.Error as e:
        raise UserError(f"{path}: invalid CSV ({e})") from None


read_csv.extensions = (".csv", ".csv.gz")


def read_txt(path: str) -> Iterator[dict]:
    """Plain text: one document per non-blank line, under the key 'text'."""
    with _open_text(path, binary=True) as f:
        for lineno, raw in enumerate(f, 1):
            line = decode_line(path, lineno, raw).rstrip("\r\n")
            if line.strip():
                yield {"text": line}


read_txt.extensions = (".txt", ".txt.gz")

BUILTIN_READERS: dict[str, Reader] = {
    "parquet": read_parquet,
    "jsonl": read_jsonl,
    "json": read_json,
    "csv": read_csv,
    "txt": read_txt,
}


def readers() -> dict[str, Reader]:
    """Every registered reader (built-ins and plugins) by format name."""
    from llmctl.core.plugins import get_bus

    return {name: entry.value for name, entry in get_bus().registry("readers").items()}


def reader_for(path: str, fmt: str | None = None) -> Reader:
    table = readers()
    if fmt:
        if fmt not in table:
            raise UserError(f"unknown input format '{fmt}'; available: {', '.join(sorted(table))}")
        return table[fmt]
    name = path.lower()
    best: tuple[int, Reader] | None = None
    for reader in table.values():
        for ext in getattr(reader, "extensions", ()):
            if name.endswith(ext) and (best is None or len(ext) > best[0]):
                best = (len(ext), reader)
    if best is None:
        exts = sorted({e for r in table.values() for e in getattr(r, "extensions", ())})
        raise UserError(f"{path}: unknown file type (readable: {', '.join(exts)})")
    return best[1]


SKIP_NAMES = {"manifest.json"}


def expand_inputs(paths: Iterable[str | os.PathLike], what: str = "--input") -> list[str]:
    """Files named directly, plus every readable file under named directories, sorted for a stable order.

    Inside a directory, names starting with '.' or '_' (work dirs, `_report.json`) and `manifest.json` are
    skipped, as Hadoop/Spark do, so one stage's output directory is the next stage's input as-is.
    """
    exts = tuple(e for r in readers().values() for e in getattr(r, "extensions", ()))
    out: list[str] = []
    for p in paths:
        for part in str(p).split(","):
            if not part:
                continue
            path = Path(part)
            if path.is_dir():
                found = sorted(
                    str(f)
                    for f in path.rglob("*")
                    if f.is_file()
                    and f.name.lower().endswith(exts)
                    and f.name not in SKIP_NAMES
                    and not any(part.startswith((".", "_")) for part in f.relative_to(path).parts)
                )
                if not found:
                    raise UserError(f"{what} {path}: no readable files in this directory")
                out.extend(found)
            elif path.is_file():
                out.append(str(path))
            else:
                from glob import glob

                matches = sorted(glob(part))
                if not matches:
                    raise UserError(f"{what} {part}: no such file or directory")
                out.extend(m for m in matches if Path(m).is_file())
    if not out:
        raise UserError(f"{what}: no input files given")
    return out


def pick_text_key(row: dict[str, Any], text_key: str | None, path: str) -> str:
    """The text column: the one asked for, or (when not asked) 'text' then 'content'."""
    if text_key:
        if text_key not in row:
            raise UserError(
                f"{path}: no text column '{text_key}' (columns: {', '.join(map(str, row)) or 'none'})"
            )
        return text_key
    for key in ("text", "content"):
        if key in row:
            return key
    raise UserError(
        f"{path}: no 'text' or 'content' column (columns: {', '.join(map(str, row)) or 'none'}); "
        "pass --text-key"
    )


def iter_documents(
    plan: ShardPlan | Sequence[str],
    text_key: str | None = None,
    stats: StageStats | None = None,
    lang_key: str | None = None,
    fmt: str | None = None,
) -> Iterator[Document]:
    """Documents of one shard, in a stable order; empty/whitespace-only texts are dropped and counted ("empty").

    Rows are framed, numbered and named by `rows.py`, the path chunked reading takes too. The document
    numbering used for document-level sharding counts every row of every file, so it does not depend on the
    shard count.
    """
    from .rows import file_rows, file_text_key, record_of, text_of, where

    if not isinstance(plan, ShardPlan):
        plan = plan_shard(list(plan))
    number = -1
    for path in plan.files:
        key = file_text_key(path, text_key, fmt)
        _kind, word, rows = file_rows(path, fmt)
        for index, lineno, item in rows:
            number += 1
            if not plan.keeps(number):
                continue
            row = record_of(path, lineno, item)
            text = text_of(row, key, where(path, index, lineno, word))
            lang = row.get(lang_key) if lang_key else None
            if not text.strip():
                if stats is not None:
                    stats.drop("empty", nbytes(text), lang)
                continue
            yield Document(text, row, path, index, lang if isinstance(lang, str) else None)
