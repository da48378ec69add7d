"""Where `classify` writes: one file per slab (`readers.slabs`), with the input's columns and the new ones.

A slab's file is written under a temp name and renamed when complete, so a crash never leaves a file that
looks finished. Parquet output keeps the input file's column types and appends the classifiers' columns; jsonl
output is each input record with the columns added.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from llmctl.core.errors import UserError


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

    def __init__(self, path: Path, fmt: str, schema=None, key: Any = None, tag: str = "tmp"):
        self.path, self.fmt, self.schema, self.key = Path(path), fmt, schema, key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{tag}.tmp")  # `tag`: which shard's (for resets)
        self.rows = 0
        self._f = None
        self._pq = None

    def write(self, records: list[dict[str, Any]]) -> None:
        if self.fmt == "jsonl":
            if self._f is None:
                self._f = open(self.tmp, "wb")
            self._f.write(
                "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records).encode(
                    "utf-8", "surrogatepass"
                )
            )
        else:
            self._write_parquet(records)
        self.rows += len(records)

    def _write_parquet(self, records: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_pylist(records, schema=self.schema)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise UserError(
                f"{self.path}: cannot write these rows to parquet ({e}); are the input files' "
                "columns consistent?"
            ) from None
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
