"""Pipeline plumbing shared by every data stage: documents, per-stage counters, shard selection, progress.

Every stage is iterator-in/iterator-out over `Document`s and keeps a `StageStats` (docs/bytes kept, dropped and
modified, by reason and by language) that ends up in the stage's report, like datatrove's pipeline steps. Every
stage takes `(shard_index, num_shards)` and runs under `executors.run_stage`: a local process pool, Ray tasks or a
Slurm array fan the same stage out over the input without changing it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from llmctl.core.errors import UserError


class Document:
    """One document: its text, the row it came from (written back on output), and where it came from."""

    __slots__ = ("text", "row", "source", "index", "lang")

    def __init__(
        self,
        text: str,
        row: dict[str, Any] | None = None,
        source: str = "",
        index: int = 0,
        lang: str | None = None,
    ):
        self.text = text
        self.row = row if row is not None else {}
        self.source = source  # file the document was read from
        self.index = index  # row number inside that file (0-based, counting every row read)
        self.lang = lang

    @property
    def locator(self) -> str:
        return f"{self.source}:{self.index}"

    def language(self) -> str:
        """The document's language: its own field if it has one, else a character-class guess (cached)."""
        if self.lang is None:
            from .text import detect_lang

            self.lang = detect_lang(self.text)
        return self.lang

    def to_row(self, text_key: str) -> dict[str, Any]:
        row = dict(self.row)
        row[text_key] = self.text
        return row


def nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


@dataclass
class Count:
    docs: int = 0
    bytes: int = 0
    by_lang: dict[str, list[int]] = field(default_factory=dict)  # lang -> [docs, bytes]

    def add(self, n_bytes: int, lang: str | None, docs: int = 1) -> None:
        self.docs += docs
        self.bytes += n_bytes
        slot = self.by_lang.setdefault(lang or "unknown", [0, 0])
        slot[0] += docs
        slot[1] += n_bytes

    def merge(self, other: "Count") -> None:
        self.docs += other.docs
        self.bytes += other.bytes
        for lang, (d, b) in other.by_lang.items():
            slot = self.by_lang.setdefault(lang, [0, 0])
            slot[0] += d
            slot[1] += b

    def to_dict(self) -> dict[str, Any]:
        return {
            "docs": self.docs,
            "bytes": self.bytes,
            "by_lang": {k: {"docs": d, "bytes": b} for k, (d, b) in sorted(self.by_lang.items())},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Count":
        return cls(
            d["docs"], d["bytes"], {k: [v["docs"], v["bytes"]] for k, v in d.get("by_lang", {}).items()}
        )


class StageStats:
    """Counters for one stage: documents/bytes kept, dropped by reason, modified by reason (bytes removed)."""

    def __init__(self, name: str):
        self.name = name
        self.kept = Count()
        self.dropped: dict[str, Count] = {}
        self.modified: dict[str, Count] = {}  # reason -> docs touched, bytes removed

    def keep(self, n_bytes: int, lang: str | None = None) -> None:
        self.kept.add(n_bytes, lang)

    def drop(self, reason: str, n_bytes: int, lang: str | None = None) -> None:
        self.dropped.setdefault(reason, Count()).add(n_bytes, lang)

    def modify(self, reason: str, bytes_removed: int, lang: str | None = None) -> None:
        self.modified.setdefault(reason, Count()).add(bytes_removed, lang)

    @property
    def dropped_docs(self) -> int:
        return sum(c.docs for c in self.dropped.values())

    def merge(self, other: "StageStats") -> "StageStats":
        self.kept.merge(other.kept)
        for table, theirs in ((self.dropped, other.dropped), (self.modified, other.modified)):
            for reason, count in theirs.items():
                table.setdefault(reason, Count()).merge(count)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "kept": self.kept.to_dict(),
            "dropped": {r: c.to_dict() for r, c in self.dropped.items()},
            "modified": {r: c.to_dict() for r, c in self.modified.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageStats":
        s = cls(d["stage"])
        s.kept = Count.from_dict(d["kept"])
        s.dropped = {r: Count.from_dict(c) for r, c in d.get("dropped", {}).items()}
        s.modified = {r: Count.from_dict(c) for r, c in d.get("modified", {}).items()}
        return s

    def summary(self) -> str:
        """One line per reason, with the language split so a rule that skews the mix is visible."""
        lines = [f"[{self.name}] kept {self.kept.docs} docs / {_human(self.kept.bytes)}"]
        for title, table in (("dropped", self.dropped), ("modified", self.modified)):
            for reason, c in sorted(table.items(), key=lambda kv: -kv[1].docs):
                langs = ", ".join(f"{k} {d}" for k, (d, _b) in sorted(c.by_lang.items()))
                lines.append(f"  {title} by {reason}: {c.docs} docs / {_human(c.bytes)} ({langs})")
        return "\n".join(lines)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


class Stage:
    """Base class: subclasses set `name` and implement `process(docs)`; counters live in `self.stats`."""

    name = "stage"

    def __init__(self) -> None:
        self.stats = StageStats(self.name)

    def process(self, docs: Iterable[Document]) -> Iterator[Document]:
        raise NotImplementedError

    def __call__(self, docs: Iterable[Document]) -> Iterator[Document]:
        return self.process(docs)


# ---- sharding -------------------------------------------------------------------------------------------


def check_shard(shard_index: int, num_shards: int) -> None:
    if num_shards < 1:
        raise UserError(f"--num-shards must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise UserError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")


@dataclass(frozen=True)
class ShardPlan:
    """Which files shard `i` of `n` reads, and whether it further keeps only every n-th document.

    Files are the unit when there are at least as many files as shards (file k goes to shard k mod n); with
    fewer files than shards every shard reads all files and keeps documents k with k mod n == i, so even a
    single big file fans out. Either way the plan is a pure function of (sorted inputs, i, n).
    """

    files: tuple[str, ...]
    shard_index: int
    num_shards: int
    by_document: bool

    def keeps(self, doc_number: int) -> bool:
        return not self.by_document or doc_number % self.num_shards == self.shard_index


def plan_shard(files: Sequence[str], shard_index: int = 0, num_shards: int = 1) -> ShardPlan:
    check_shard(shard_index, num_shards)
    files = tuple(files)
    if num_shards == 1:
        return ShardPlan(files, 0, 1, False)
    if len(files) >= num_shards:
        return ShardPlan(files[shard_index::num_shards], shard_index, num_shards, False)
    return ShardPlan(files, shard_index, num_shards, True)


def shard_tag(shard_index: int, num_shards: int) -> str:
    return f"{shard_index:05d}-of-{num_shards:05d}"


class _NoBar:
    n = 0

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix(self, *a: Any, **k: Any) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_bar(quiet: bool = False, **kw: Any):
    """A progress bar (llmctl.core.progress) unless `quiet` (pool workers report to the parent's bar instead)."""
    if quiet:
        return _NoBar()
    from llmctl.core.progress import progress

    return progress(**kw)


# ---- progress from pool workers ------------------------------------------------------------------------------------

_PROGRESS_COUNTER = None


def _init_worker(counter) -> None:
    global _PROGRESS_COUNTER
    _PROGRESS_COUNTER = counter
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def report_progress(n: int) -> None:
    """Called by a stage running in a pool worker so the parent's bar moves; a no-op in the parent."""
    if _PROGRESS_COUNTER is not None and n:
        with _PROGRESS_COUNTER.get_lock():
            _PROGRESS_COUNTER.value += n


def mp_context():
    """`spawn` everywhere: tokenizers' thread pool and tqdm's monitor thread make `fork` unsafe."""
    return mp.get_context("spawn")
