"""What `classify` reports: each score's distribution per language and per domain, and its extreme examples.

Every scorer punishes code, markdown and LaTeX, so before anyone filters on a score the report shows, per
language and per domain, its mean and quantiles: "the scorer punishes code" is one glance. Shards keep
mergeable summaries (count, sum, min, max and a 1000-bin histogram over the score's range, so quantiles are
good to 1/1000 of the range) and their k lowest and highest examples; `merge` folds them in shard order, so
the report is the same for any shard count. Ties between examples break by (file, row).
"""

from __future__ import annotations

from typing import Any

import numpy as np

BINS = 1000
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
EXAMPLE_CHARS = 400


class Distribution:
    """count, sum, min, max and a histogram of one score in one group (a language, a domain, all)."""

    def __init__(self, lo: float, hi: float):
        self.lo, self.hi = float(lo), float(hi) if hi > lo else float(lo) + 1.0
        self.n, self.sum, self.min, self.max = 0, 0.0, float("inf"), float("-inf")
        self.hist = np.zeros(BINS, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        if not len(values):
            return
        self.n += len(values)
        self.sum += float(values.sum())
        self.min, self.max = min(self.min, float(values.min())), max(self.max, float(values.max()))
        b = np.clip(((values - self.lo) / (self.hi - self.lo) * BINS).astype(np.int64), 0, BINS - 1)
        self.hist += np.bincount(b, minlength=BINS)

    def merge(self, other: "Distribution") -> None:
        self.n += other.n
        self.sum += other.sum
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self.hist += other.hist

    def quantile(self, q: float) -> float:
        cum = np.cumsum(self.hist)
        b = int(np.searchsorted(cum, q * self.n, side="left"))
        value = self.lo + (min(b, BINS - 1) + 0.5) * (self.hi - self.lo) / BINS
        return float(min(max(value, self.min), self.max))

    def to_dict(self) -> dict[str, Any]:
        nz = np.flatnonzero(self.hist)
        return {
            "lo": self.lo,
            "hi": self.hi,
            "n": self.n,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
            "hist": [[int(i), int(self.hist[i])] for i in nz],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Distribution":
        out = cls(d["lo"], d["hi"])
        out.n, out.sum, out.min, out.max = d["n"], d["sum"], d["min"], d["max"]
        for i, c in d["hist"]:
            out.hist[i] = c
        return out

    def summary(self) -> dict[str, Any]:
        if not self.n:
            return {"docs": 0}
        out = {"docs": self.n, "mean": round(self.sum / self.n, 6), "min": self.min, "max": self.max}
        out.update({f"p{int(q * 100):02d}": round(self.quantile(q), 4) for q in QUANTILES})
        return out


class ScoreReport:
    """Distributions of every score column by language and by domain, plus extreme examples per column."""

    def __init__(self, ranges: dict[str, tuple[float, float]], k: int = 0):
        self.ranges, self.k = ranges, k
        self.dists: dict[str, dict[str, dict[str, Distribution]]] = {
            c: {"all": {}, "lang": {}, "domain": {}} for c in ranges
        }
        self.low: dict[str, list] = {c: [] for c in ranges}
        self.high: dict[str, list] = {c: [] for c in ranges}

    def _dist(self, column: str, kind: str, key: str) -> Distribution:
        table = self.dists[column][kind]
        if key not in table:
            table[key] = Distribution(*self.ranges[column])
        return table[key]

    def add(
        self,
        columns: dict[str, list],
        langs: list[str],
        domains: list[str] | None,
        file_index: int,
        rows: list[int],
        texts: list[str],
    ) -> None:
        lang_arr = np.asarray(langs, dtype=object)
        dom_arr = np.asarray([str(d) for d in domains], dtype=object) if domains is not None else None
        for column in self.ranges:
            values = np.asarray(columns[column], dtype=np.float64)
            self._dist(column, "all", "all").add(values)
            for kind, arr in (("lang", lang_arr), ("domain", dom_arr)):
                if arr is None:
                    continue
                for key in sorted(set(arr.tolist())):
                    self._dist(column, kind, key).add(values[arr == key])
            if self.k:
                self._examples(column, values, langs, domains, file_index, rows, texts)

    def _examples(self, column, values, langs, domains, file_index, rows, texts) -> None:
        order = np.argsort(values, kind="stable")
        picks = set(order[: self.k].tolist()) | set(order[-self.k :].tolist())
        items = [
            {
                "score": float(values[i]),
                "file": file_index,
                "row": int(rows[i]),
                "lang": langs[i],
                "domain": None if domains is None else domains[i],
                "text": texts[i][:EXAMPLE_CHARS],
            }
            for i in sorted(picks)
        ]
        self.low[column] = _lowest(self.low[column] + items, self.k)
        self.high[column] = _highest(self.high[column] + items, self.k)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dists": {
                c: {kind: {k: d.to_dict() for k, d in table.items()} for kind, table in kinds.items()}
                for c, kinds in self.dists.items()
            },
            "low": self.low,
            "high": self.high,
        }

    def merge_dict(self, d: dict[str, Any]) -> None:
        for c, kinds in d["dists"].items():
            for kind, table in kinds.items():
                for key, dist in table.items():
                    self._dist(c, kind, key).merge(Distribution.from_dict(dist))
        for c in self.ranges:
            self.low[c] = _lowest(self.low[c] + d["low"][c], self.k)
            self.high[c] = _highest(self.high[c] + d["high"][c], self.k)

    def summary(self) -> dict[str, Any]:
        return {
            c: {
                "all": kinds["all"]["all"].summary() if "all" in kinds["all"] else {"docs": 0},
                "by_lang": {k: d.summary() for k, d in sorted(kinds["lang"].items())},
                "by_domain": {k: d.summary() for k, d in sorted(kinds["domain"].items())},
            }
            for c, kinds in self.dists.items()
        }


def _lowest(items: list, k: int) -> list:
    return sorted(items, key=lambda x: (x["score"], x["file"], x["row"]))[:k]


def _highest(items: list, k: int) -> list:
    return sorted(items, key=lambda x: (-x["score"], x["file"], x["row"]))[:k]


def format_table(scores: dict[str, Any]) -> str:
    """The per-language / per-domain table the CLI prints: one row per group, mean and quantiles."""
    cols = ("docs", "mean") + tuple(f"p{int(q * 100):02d}" for q in QUANTILES)
    lines = []
    for column, s in scores.items():
        lines.append(f"{'[' + column + ']':<26}" + "  ".join(f"{c:>7}" for c in cols))
        rows = [("all", s["all"])] + [(f"lang={k}", v) for k, v in s["by_lang"].items()]
        rows += [(f"domain={k}", v) for k, v in s["by_domain"].items()]
        for name, v in rows:
            cells = [
                f"{v.get(c, 0):>7}" if c == "docs" else f"{v[c]:>7.3f}" if c in v else f"{'-':>7}"
                for c in cols
            ]
            lines.append(f"  {name:<24}" + "  ".join(cells))
    return "\n".join(lines)
