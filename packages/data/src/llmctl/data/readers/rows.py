"""Row framing shared by every reader path: which rows a file has, how they are numbered, how one is named.

Document reading (`iter_documents`), chunked reading for worker pools (`chunks.py`) and the SFT records
(`sft/preprocess.py`) all number rows and name bad ones here, so the same bad row gives the same message
whichever path read it: `file:line` for line formats (jsonl, blank lines are not rows), `file: item N` for a
whole-file JSON list and `file: row N` for the rest (parquet, csv, plugin readers).
"""

from __future__ import annotations

from typing import Iterator

from llmctl.core.errors import UserError

LINE_FORMATS = ("read_jsonl",)


def where(path: str, row: int, lineno: int = 0, word: str = "row") -> str:
    """The one way a row is named in errors and reports."""
    return f"{path}:{lineno}" if lineno else f"{path}: {word} {row}"


def row_word(reader) -> str:
    return "item" if getattr(reader, "__name__", "") == "read_json" else "row"


def is_line_reader(reader) -> bool:
    return getattr(reader, "__name__", "") in LINE_FORMATS


def raw_lines(path: str) -> Iterator[tuple[int, bytes, int]]:
    """(row, raw line, line number) of a line-format file; blank lines are not rows."""
    from . import _open_text

    row = -1
    with _open_text(path, binary=True) as f:
        for lineno, raw in enumerate(f, 1):
            if raw.strip():
                row += 1
                yield row, raw, lineno


def parse_raw(path: str, lineno: int, raw: bytes) -> dict:
    """One raw jsonl line as a record (UTF-8 and JSON errors name file:line)."""
    from . import decode_line, parse_json_line

    return parse_json_line(path, lineno, decode_line(path, lineno, raw))


def iter_file_records(path: str, fmt: str | None = None) -> Iterator[tuple[int, str, dict]]:
    """(row, where, record) for every row of one file, numbered and named as above."""
    from . import reader_for

    reader = reader_for(path, fmt)
    if is_line_reader(reader):
        for row, raw, lineno in raw_lines(path):
            yield row, where(path, row, lineno), parse_raw(path, lineno, raw)
        return
    word = row_word(reader)
    for row, rec in enumerate(reader(path)):
        yield row, where(path, row, 0, word), rec


def check_text(text: object, key: str, at: str) -> str:
    """A row's text value: None reads as empty; anything but a string is a UserError naming the row."""
    if text is None:
        return ""
    if not isinstance(text, str):
        raise UserError(f"{at}: column '{key}' is {type(text).__name__}, expected text")
    return text


def missing_key(record: dict, key: str, at: str) -> UserError:
    return UserError(f"{at}: no text column '{key}' (columns: {', '.join(map(str, record)) or 'none'})")


def iter_records(plan, on_first=None, fmt: str | None = None) -> Iterator[tuple[str, int, str, dict]]:
    """(path, row, where, record) of the rows shard `plan` keeps, numbered as `iter_documents` numbers them.

    `on_first(record, where)` sees every file's first row even when another shard keeps it, so a per-file
    check (an SFT handler's columns) names the same row whatever the shard count.
    """
    number = -1
    for path in plan.files:
        for row, at, rec in iter_file_records(path, fmt):
            number += 1
            if row == 0 and on_first is not None:
                on_first(rec, at)
            if plan.keeps(number):
                yield path, row, at, rec
