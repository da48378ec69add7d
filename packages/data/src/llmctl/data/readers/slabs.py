"""Slabs: fixed row ranges of an input file, the unit `classify` shards by, batches and writes (a view of a
shard's documents beside `chunks.py`: `ShardDocuments.slabs`).

Slab k of a file is its rows [k * rows_per_file, (k + 1) * rows_per_file); batches start at the slab's first
row. When there are fewer files than shards, shard i takes the slabs numbered i, i + n, ... in (file, slab)
order, which every shard can count because in that mode every shard reads every file. Rows are framed and
named by the one reader path (`readers.rows`): a missing text column is `file:line` as in every stage, and a
jsonl row a shard does not own is never parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from ..pipeline import ShardPlan


@dataclass
class Batch:
    path: str
    slab: int
    rows: list[int] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def slab_batches(
    plan: ShardPlan, text_key: str | None, batch_size: int, rows_per_file: int
) -> Iterator[Batch]:
    """The batches of the slabs `plan`'s shard owns, in (file, row) order."""
    from .rows import file_rows, file_text_key, record_of, text_of, where

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
