"""Slabs: fixed row ranges of an input file, the unit `classify` shards by, batches and writes.

Slab k of a file is its rows [k * rows_per_file, (k + 1) * rows_per_file); batches start at the slab's first
row. When there are fewer files than shards, shard i takes the slabs numbered i, i + n, ... in (file, slab)
order, which every shard can count because in that mode every shard reads every file. Rows are framed and
named by the one reader path (`readers.rows`): a missing text column is `file:line` as in every stage, and a
jsonl row a shard does not own is never parsed.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from llmctl.core.errors import UserError

from ..pipeline import ShardPlan


@dataclass
class Batch:
    path: str
    slab: int
    rows: list[int] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def slab_batches(plan: ShardPlan, text_key: str | None, batch_size: int, rows_per_file: int) -> Iterator[Batch]:
    """The batches of the slabs `plan`'s shard owns, in (file, row) order."""
    from ..readers.rows import file_rows, file_text_key, record_of, text_of, where

    slab_number = -1  # global (file, slab) count: only used when shards take slabs round-robin
    for path in plan.files:
        key = file_text_key(path, text_key)
        _kind, word, rows = file_rows(path)
        batch: Batch | None = None
        current, mine = -1, False
        for row, lineno, item in rows:
            slab = row // rows_per_file
            if slab != current:
                if batch is not None and batch.rows:
                    yield batch
                batch = None
                current, slab_number = slab, slab_number + 1
                mine = not plan.by_document or slab_number % plan.num_shards == plan.shard_index
            if not mine:
                continue
            if batch is None:
                batch = Batch(path, slab)
            rec = record_of(path, lineno, item)
            batch.rows.append(row)
            batch.records.append(rec)
            batch.texts.append(text_of(rec, key, where(path, row, lineno, word)))
            if (row - slab * rows_per_file + 1) % batch_size == 0:
                yield batch
                batch = Batch(path, slab)
        if batch is not None and batch.rows:
            yield batch


def output_schema(path: str, fmt: str, metas) -> Any:
    """Parquet output keeps the input's column types and appends (or retypes) the classifiers' columns."""
    if fmt != "parquet" or not path.lower().endswith((".parquet", ".pq")):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    added = []
    for m in metas:
        if m.task == "multiclass":
            added += [pa.field(m.column, pa.string()), pa.field(f"{m.column}_score", pa.float64())]
        else:
            added.append(pa.field(m.column, pa.float64()))
    schema = pq.ParquetFile(path).schema_arrow.remove_metadata()
    names = {f.name for f in added}
    return pa.schema([f for f in schema if f.name not in names] + added)


class SlabWriter:
    """One slab's output file, written under a temp name and renamed when `close` is called."""

    def __init__(self, path: Path, fmt: str, schema=None, key: Any = None):
        self.path, self.fmt, self.schema, self.key = Path(path), fmt, schema, key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.rows = 0
        self._f = None
        self._pq = None

    def write(self, records: list[dict[str, Any]]) -> None:
        if self.fmt == "jsonl":
            if self._f is None:
                self._f = open(self.tmp, "wb")
            self._f.write("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
                          .encode("utf-8", "surrogatepass"))
        else:
            self._write_parquet(records)
        self.rows += len(records)

    def _write_parquet(self, records: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_pylist(records, schema=self.schema)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise UserError(f"{self.path}: cannot write these rows to parquet ({e}); are the input files' "
                            "columns consistent?") from None
        if self._pq is None:
            self.schema = table.schema
            self._pq = pq.ParquetWriter(str(self.tmp), self.schema, compression="zstd")
        self._pq.write_table(table)

    def close(self) -> dict[str, Any]:
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        if self._pq is not None:
            self._pq.close()
        os.replace(self.tmp, self.path)
        return {"path": str(self.path), "rows": self.rows, "bytes": self.path.stat().st_size}

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._f is not None:
                self._f.close()
            if self._pq is not None:
                self._pq.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)
