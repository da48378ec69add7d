"""The one reader path: which rows a file has, how they are numbered and named, and how a row's text is taken.

Document reading (`iter_documents`), chunked reading for worker pools (`chunks.py`) and the SFT records
(`iter_records`) all frame rows with `file_rows` and take text with `text_of`, so the same bad row gives the
same message whichever path read it: `file:line` for line formats (jsonl; blank lines are not rows), `file:
item N` for a whole-file JSON list and `file: row N` for the rest (parquet, csv, plugin readers). A jsonl row
stays raw bytes until a consumer parses it (`record_of`), so chunked reading can parse in the worker.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from llmctl.core.errors import UserError


def where(path: str, row: int, lineno: int = 0, word: str = "row") -> str:
    """The one way a row is named in errors and reports."""
    return f"{path}:{lineno}" if lineno else f"{path}: {word} {row}"


def _name(reader) -> str:
    return getattr(reader, "__name__", "")


def raw_lines(path: str) -> Iterator[tuple[int, int, bytes]]:
    """(row, line number, raw line) of a line-format file; blank lines are not rows."""
    from . import _open_text

    row = -1
    with _open_text(path, binary=True) as f:
        for lineno, raw in enumerate(f, 1):
            if raw.strip():
                row += 1
                yield row, lineno, raw


def file_rows(path: str, fmt: str | None = None, columns: Sequence[str] | None = None):
    """(kind, word, iterator of (row, line number or 0, raw line or record)) for one file.

    kind "jsonl": items are raw lines (parse with `record_of`); "records": items are dicts (`columns`, when
    given, limits a parquet read to those columns)."""
    from . import read_parquet, reader_for

    reader = reader_for(path, fmt)
    if _name(reader) == "read_jsonl":
        return "jsonl", "row", raw_lines(path)
    word = "item" if _name(reader) == "read_json" else "row"
    recs = read_parquet(path, columns) if columns and _name(reader) == "read_parquet" else reader(path)
    return "records", word, ((row, 0, rec) for row, rec in enumerate(recs))


def record_of(path: str, lineno: int, item: Any) -> dict:
    """A row as a record: a raw jsonl line is decoded and parsed here (errors name file:line)."""
    if not isinstance(item, bytes):
        return item
    from . import decode_line, parse_json_line

    return parse_json_line(path, lineno, decode_line(path, lineno, item))


def text_of(record: dict, key: str, at: str) -> str:
    """The row's text under `key` ("" for None); a missing key or a non-string is a UserError naming the row."""
    if key not in record:
        raise UserError(f"{at}: no text column '{key}' (columns: {', '.join(map(str, record)) or 'none'})")
    text = record[key]
    if text is None:
        return ""
    if not isinstance(text, str):
        raise UserError(f"{at}: column '{key}' is {type(text).__name__}, expected text")
    return text


def file_text_key(path: str, text_key: str | None, fmt: str | None = None) -> str:
    """The text column of a file, from its first row (parquet: its schema), the same for every shard."""
    from . import pick_text_key, reader_for

    if _name(reader_for(path, fmt)) == "read_parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            names = pq.ParquetFile(path).schema_arrow.names
        except (pa.ArrowException, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{path}: not a readable parquet file ({first})") from None
        return pick_text_key(dict.fromkeys(names), text_key, path)
    _kind, _word, rows = file_rows(path, fmt)
    first = next(rows, None)
    if first is None:
        return text_key or "text"
    return pick_text_key(record_of(path, first[1], first[2]), text_key, path)


def iter_file_records(path: str, fmt: str | None = None) -> Iterator[tuple[int, str, dict]]:
    """(row, where, record) for every row of one file."""
    _kind, word, rows = file_rows(path, fmt)
    for row, lineno, item in rows:
        yield row, where(path, row, lineno, word), record_of(path, lineno, item)


def iter_records(plan, on_first=None, fmt: str | None = None) -> Iterator[tuple[str, int, str, dict]]:
    """(path, row, where, record) of the rows shard `plan` keeps, numbered as `iter_documents` numbers them.

    `on_first(record, where)` sees every file's first row even when another shard keeps it, so a per-file
    check (an SFT handler's columns) names the same row whatever the shard count.
    """
    number = -1
    for path in plan.files:
        _kind, word, rows = file_rows(path, fmt)
        for row, lineno, item in rows:
            number += 1
            keep = plan.keeps(number)
            if row and not keep:
                continue
            at = where(path, row, lineno, word)
            rec = record_of(path, lineno, item)
            if row == 0 and on_first is not None:
                on_first(rec, at)
            if keep:
                yield path, row, at, rec
