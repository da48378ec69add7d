"""Rolling, atomic shard writers (jsonl, parquet): each file appears under its final name only when complete.

Files are named `<prefix>-<shard>-<k>.<ext>`: a new file starts once the current one reaches `max_bytes`
(bytes on disk), so output stays in manageable pieces whatever the corpus size.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from llmctl.core.errors import UserError
from llmctl.core.io import atomic_path, write_json_atomic


class _RollingWriter:
    ext = ""

    def __init__(self, out_dir: str | os.PathLike, prefix: str, max_bytes: int | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.files: list[dict[str, Any]] = []  # {"path", "rows", "bytes"}
        self._k = 0
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._rows = 0

    def _next_paths(self) -> tuple[Path, Path]:
        final = self.out_dir / f"{self.prefix}-{self._k:05d}{self.ext}"
        self._k += 1
        return final.with_name(f".{final.name}.{os.getpid()}.tmp"), final

    def _commit(self, size: int) -> None:
        assert self._tmp is not None and self._final is not None
        os.replace(self._tmp, self._final)
        self.files.append({"path": str(self._final), "rows": self._rows, "bytes": size})
        self._tmp = self._final = None
        self._rows = 0

    def abort(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
        self._tmp = self._final = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return None


class JsonlWriter(_RollingWriter):
    ext = ".jsonl"

    def __init__(self, out_dir, prefix, max_bytes=None):
        super().__init__(out_dir, prefix, max_bytes)
        self._f = None

    def write(self, row: dict[str, Any], size: int | None = None) -> None:
        self.write_raw(
            (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8", "surrogatepass")
        )

    def write_raw(self, line: bytes) -> None:
        """Append one already-encoded JSON line (ending in a newline)."""
        if self._f is None:
            self._tmp, self._final = self._next_paths()
            self._f = open(self._tmp, "wb")
            self._size = 0
        self._f.write(line)
        self._size += len(line)
        self._rows += 1
        if self.max_bytes and self._size >= self.max_bytes:
            self._close_file()

    def _close_file(self) -> None:
        if self._f is None:
            return
        self._f.flush()
        os.fsync(self._f.fileno())
        size = self._size
        self._f.close()
        self._f = None
        self._commit(size)

    def close(self) -> None:
        self._close_file()

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        super().abort()


class ParquetWriter(_RollingWriter):
    """Buffers rows into row groups of about `row_group_bytes` of text; rolls files at `max_bytes` on disk."""

    ext = ".parquet"

    def __init__(
        self,
        out_dir,
        prefix,
        max_bytes=None,
        row_group_bytes: int = 64 << 20,
        schema=None,
        compression: str = "snappy",
    ):
        super().__init__(out_dir, prefix, max_bytes)
        self.row_group_bytes = row_group_bytes
        self.schema = schema
        self.compression = compression
        self._rows_buf: list[dict[str, Any]] = []
        self._tables: list[Any] = []
        self._buf_bytes = 0
        self._writer = None
        self._sink = None
        self._ratio = 0.5  # on-disk bytes per buffered text byte, learnt from the row groups written so far
        self._in_bytes = 0

    def write(self, row: dict[str, Any], size: int | None = None) -> None:
        self._rows_buf.append(row)
        self._buf_bytes += size if size is not None else sum(len(str(v)) for v in row.values())
        if self._buf_bytes >= self.row_group_bytes:
            self.flush()

    def write_table(self, table, size: int) -> None:
        """Append an Arrow table holding `size` bytes of text (used by `sample`, which never leaves Arrow)."""
        self._tables.append(table)
        self._buf_bytes += size
        if self._buf_bytes >= self.row_group_bytes:
            self.flush()

    def _to_table(self):
        import pyarrow as pa

        tables = list(self._tables)
        if self._rows_buf:
            try:
                tables.append(pa.Table.from_pylist(self._rows_buf, schema=self.schema))
            except (pa.ArrowException, TypeError, ValueError) as e:
                raise UserError(
                    f"cannot write rows to parquet ({e}); are the input files' columns consistent?"
                ) from None
        if len(tables) == 1:
            return tables[0]
        return pa.concat_tables(tables, promote_options="default")

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._rows_buf and not self._tables:
            return
        table = self._to_table()
        if self.schema is None:
            self.schema = table.schema
        elif table.schema != self.schema:
            table = table.cast(self.schema)
        if self._writer is None:
            self._tmp, self._final = self._next_paths()
            self._sink = pa.OSFile(str(self._tmp), "wb")
            self._writer = pq.ParquetWriter(self._sink, self.schema, compression=self.compression)
        self._writer.write_table(table)
        self._rows += table.num_rows
        self._in_bytes += self._buf_bytes
        self._rows_buf, self._tables, self._buf_bytes = [], [], 0
        written = self._sink.tell()
        self._ratio = written / max(1, self._in_bytes)
        # roll when the file has reached its size, or would overshoot it by more than half a row group
        if self.max_bytes and written + 0.5 * self.row_group_bytes * self._ratio >= self.max_bytes:
            self._close_file()

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._sink.close()
        size = os.path.getsize(self._tmp)
        self._writer = self._sink = None
        self._in_bytes = 0
        self._commit(size)

    def close(self) -> None:
        self.flush()
        self._close_file()

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
                self._sink.close()
            self._writer = self._sink = None
        super().abort()


def make_writer(fmt: str, out_dir, prefix: str, max_bytes: int | None = None):
    if fmt == "parquet":
        return ParquetWriter(
            out_dir,
            prefix,
            max_bytes=max_bytes,
            row_group_bytes=min(64 << 20, max(1 << 16, (max_bytes or 1 << 30) // 8)),
        )
    if fmt == "jsonl":
        return JsonlWriter(out_dir, prefix, max_bytes=max_bytes)
    raise UserError(f"unknown output format '{fmt}' (use jsonl or parquet)")


def output_format(out_format: str | None, files: Sequence[str]) -> str:
    """The requested format, else parquet when every input is parquet and jsonl otherwise."""
    return out_format or ("parquet" if all(f.endswith((".parquet", ".pq")) for f in files) else "jsonl")


# ---- a single output file instead of a directory --------------------------------------------------------

FILE_SUFFIXES = {".jsonl": "jsonl", ".parquet": "parquet"}


def single_file_target(output: str | os.PathLike) -> Path | None:
    """`--output x.jsonl` / `x.parquet` names one file (written from the shards' parts); else a directory."""
    p = Path(output)
    return p if p.suffix in FILE_SUFFIXES and not p.is_dir() else None


def side_path(target: Path, what: str) -> Path:
    """Where reports/work files of a single-file output go: `_<name>.<what>` next to it (skipped as input)."""
    return target.parent / f"_{target.name}.{what}"


def parts_output(output: str | os.PathLike, out_format: str | None) -> tuple[Path | None, Path, str | None]:
    """(single-file target or None, directory the shards write to, format).

    A target's parts directory survives a crash (its completion markers let a rerun resume); a fresh run
    clears stale parts through `clear_parts`."""
    target = single_file_target(output)
    if not target:
        return None, Path(output), out_format
    return target, side_path(target, "parts"), FILE_SUFFIXES[target.suffix]


def clear_parts(out_dir: str | os.PathLike, shards: Sequence[int] | None = None) -> None:
    """Remove the part files and per-shard reports an earlier run left, for `shards` (None: all of them)."""
    d = Path(out_dir)
    if not d.is_dir():
        return
    patterns = ["part-*", "_report-*.json"] if shards is None else [
        p for i in shards for p in (f"part-{i:05d}-*", f"_report-{i:05d}-of-*.json")
    ]
    for pattern in patterns:
        for f in d.glob(pattern):
            f.unlink(missing_ok=True)


def finish_single_file(report: dict[str, Any], target: Path, out_dir: Path) -> None:
    """Concatenate the shards' parts into `target`, write its report beside it and remove the parts."""
    report["files"] = [concat_files([f["path"] for f in report["files"]], target)]
    write_json_atomic(side_path(target, "report.json"), report)
    shutil.rmtree(out_dir, ignore_errors=True)


def concat_files(parts: list[str], target: Path) -> dict[str, Any]:
    """Concatenate part files (jsonl bytes, or parquet row groups) into `target`, atomically."""
    fmt = FILE_SUFFIXES[target.suffix]
    rows = 0
    with atomic_path(target) as tmp:
        if fmt == "jsonl":
            with open(tmp, "wb") as out:
                for p in parts:
                    with open(p, "rb") as f:
                        shutil.copyfileobj(f, out)
                    with open(p, "rb") as f:
                        rows += sum(1 for _ in f)
        else:
            import pyarrow.parquet as pq

            writer = None
            try:
                for p in parts:
                    pf = pq.ParquetFile(p)
                    for i in range(pf.num_row_groups):
                        table = pf.read_row_group(i)
                        if writer is None:
                            writer = pq.ParquetWriter(str(tmp), table.schema)
                        writer.write_table(table)
                        rows += table.num_rows
                if writer is None:  # no rows at all: still a valid (empty) file
                    import pyarrow as pa

                    pq.write_table(pa.table({"text": pa.array([], pa.string())}), str(tmp))
            finally:
                if writer is not None:
                    writer.close()
    return {"path": str(target), "rows": rows, "bytes": target.stat().st_size}
