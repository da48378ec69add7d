"""The `score` cleaning rule: keep documents whose classifier score (a column `classify` added) is in range.

A threshold can differ per domain, because every quality scorer punishes code, math and markdown: one global
floor that removes web spam also removes most code. In a rules file:

    rules:
      - score: {key: quality_score, min: 0.5, domain_key: domain, min_by_domain: {code: 0.1, math: 0.2}}

Unlike text rules it reads the row, so the clean stage calls it with the document (`uses_document`). A row
without the score column is an error naming the file and row (run `llmctl data classify` first), not a drop.
"""

from __future__ import annotations

from typing import Any

from llmctl.core.errors import UserError

from . import Rule


class ScoreRule(Rule):
    """Drop documents scoring under `min` (or over `max`), with per-domain floors in `min_by_domain`."""

    name = "score"
    uses_document = True

    def __init__(
        self,
        key: str = "quality_score",
        min: float | None = None,
        max: float | None = None,
        domain_key: str = "domain",
        min_by_domain: dict[str, float] | None = None,
    ):
        if min is None and max is None and not min_by_domain:
            raise TypeError("give min, max or min_by_domain")
        self.key, self.min, self.max = key, min, max
        self.domain_key, self.min_by_domain = domain_key, dict(min_by_domain or {})

    def __call__(self, text: str, doc: Any = None) -> str | None:
        row = doc.row if doc is not None else {}
        where = f"{doc.source}: row {doc.index}" if doc is not None else "document"
        value = row.get(self.key)
        if value is None:
            raise UserError(
                f"{where}: no score column '{self.key}' for the score rule "
                "(add it with `llmctl data classify`)"
            )
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: score column '{self.key}' is {value!r}, expected a number") from None
        floor = self.min
        if self.min_by_domain:
            floor = self.min_by_domain.get(str(row.get(self.domain_key)), floor)
        if floor is not None and value < floor:
            return None
        if self.max is not None and value > self.max:
            return None
        return text
