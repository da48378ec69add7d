"""Dedup parameters and the work-dir layout the three phases share (signatures, join, apply).

Per shard, the signatures phase writes one raw file per array: MinHash signatures `sig-<shard>.u32`, exact
hashes, document locations, languages and sizes, and one file per LSH band (`band<j>-<shard>.u64`): the band
columns are spilled to disk separately so the join reads one band at a time, contiguously.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from llmctl.core.errors import UserError

from ..hashing import stable_hash64
from .minhash import optimal_bands

BATCH_DOCS = 512
METHODS = {0: "exact", 1: "minhash"}
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


@dataclass(frozen=True)
class DedupParams:
    exact: bool = True
    minhash: bool = True
    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5
    bands: int = 0  # 0 = choose from threshold and num_perm
    rows: int = 0
    seed: int = 1
    # False: every LSH band match is an edge and each connected cluster keeps only its smallest document
    # (datatrove / NeMo-Curator semantics: no similarity check, faster, more false positives); a join option
    verify: bool = True

    def resolved(self) -> "DedupParams":
        if not (self.exact or self.minhash):
            raise UserError("dedup: enable --exact and/or --minhash")
        if not 0 < self.threshold <= 1:
            raise UserError(f"--threshold must be in (0, 1], got {self.threshold}")
        bands, rows = self.bands, self.rows
        if bands <= 0 and rows <= 0:
            bands, rows = optimal_bands(self.threshold, self.num_perm)
        elif bands <= 0:
            bands = self.num_perm // rows
        elif rows <= 0:
            rows = self.num_perm // bands
        if bands * rows > self.num_perm or bands < 1 or rows < 1:
            raise UserError(f"--bands {bands} x --rows {rows} must be at most --num-perm {self.num_perm}")
        return replace(self, bands=bands, rows=rows)

    def signature_dict(self) -> dict:
        """What the signatures phase depends on (stored in each shard's meta): all but the join's `verify`."""
        d = asdict(self)
        d.pop("verify")
        return d


def normalized_hash(text: str) -> int:
    """Exact-duplicate key: NFKC, lower case, whitespace and punctuation removed, then a 64-bit hash."""
    return stable_hash64(_NON_WORD.sub("", unicodedata.normalize("NFKC", text).lower()))


LANG_CODES = {"other": 0, "zh": 1, "en": 2}
LANG_NAMES = {v: k for k, v in LANG_CODES.items()}


def work_paths(work: Path, tag: str) -> dict[str, Path]:
    return {
        k: work / f"{k}-{tag}.{ext}"
        for k, ext in (
            ("sig", "u32"),
            ("exact", "u64"),
            ("loc", "i64"),
            ("lang", "u8"),
            ("size", "i64"),
            ("meta", "json"),
            ("removed", "npy"),
        )
    }


def band_path(work: Path, tag: str, band: int) -> Path:
    return work / f"band{band:03d}-{tag}.u64"
