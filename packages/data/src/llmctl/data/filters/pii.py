"""PII detection and masking: e-mails, phone numbers (CN mobile/landline, international, US), Chinese resident
ID numbers, IPv4/IPv6 addresses, and secrets in URL query strings.

Patterns are anchored against neighbouring digits/letters and validated (ID dates, phone digit counts, IP
octets) so ordinary numbers, dates, times, prices, versions and ISBNs are left alone.
"""

from __future__ import annotations

import re
from typing import Callable

from . import Rule

MASKS = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "id_number": "<ID_NUMBER>",
    "ip": "<IP>",
    "secret": "<SECRET>",
}

_SECRET = re.compile(
    r"(?i)([?&#;](?:access_token|refresh_token|id_token|token|api_key|apikey|key|secret|client_secret|password|"
    r"passwd|pwd|auth|authorization|sig|signature|session|sessionid|sid)=)([^&#\s\"'<>]+)"
)
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
    r"\.[A-Za-z]{2,}(?![A-Za-z0-9-])"
)
_CN_ID = re.compile(
    r"(?<![0-9A-Za-z])[1-8]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx]"
    r"(?![0-9A-Za-z])"
)
_CN_MOBILE = re.compile(r"(?<![0-9A-Za-z+])(?:(?:\+|00)86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2}(?![0-9A-Za-z])")
_CN_LANDLINE = re.compile(r"(?<![0-9A-Za-z-])(?:\(0\d{2,3}\)|0\d{2,3}-)\s?[2-9]\d{6,7}(?![0-9A-Za-z-])")
_INTL = re.compile(
    r"(?<![0-9A-Za-z+])\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){1,4}"
    r"(?![0-9A-Za-z])"
)
_US = re.compile(r"(?<![0-9A-Za-z(-])(?:\(\d{3}\)\s?|\d{3}[-.])\d{3}[-.]\d{4}(?![0-9A-Za-z-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![0-9.])(?:{_OCTET}\.){{3}}{_OCTET}(?![0-9]|\.\d)")
_H = r"[0-9A-Fa-f]{1,4}"
_IPV6 = re.compile(
    rf"(?<![0-9A-Za-z:])(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,7}}:(?:{_H}(?::{_H}){{0,6}})?|::(?:{_H}:){{0,6}}{_H})"
    r"(?![0-9A-Za-z:])"
)


def _digits(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _intl_ok(m: re.Match) -> bool:
    return 8 <= _digits(m.group(0)) <= 15


def _ipv6_ok(m: re.Match) -> bool:
    s = m.group(0)
    return s.count(":") >= 2 and (any(c.isalpha() for c in s) or "::" in s) and s != "::"


# (kind, pattern, validator or None, group to mask: 0 = whole match)
RULES: list[tuple[str, re.Pattern, Callable[[re.Match], bool] | None, int]] = [
    ("secret", _SECRET, None, 2),
    ("email", _EMAIL, None, 0),
    ("id_number", _CN_ID, None, 0),
    ("phone", _CN_MOBILE, None, 0),
    ("phone", _INTL, _intl_ok, 0),
    ("phone", _CN_LANDLINE, None, 0),
    ("phone", _US, None, 0),
    ("ip", _IPV4, None, 0),
    ("ip", _IPV6, _ipv6_ok, 0),
]


def find_pii(text: str) -> dict[str, int]:
    """Counts of each PII kind in `text` (what `mask_pii` would replace)."""
    return mask_pii(text)[1]


def mask_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace every PII match by its mask (e.g. `<EMAIL>`); returns the new text and counts by kind."""
    counts: dict[str, int] = {}
    for kind, pattern, ok, group in RULES:
        if kind == "secret" and "=" not in text or kind == "email" and "@" not in text:
            continue

        def repl(m: re.Match, kind=kind, ok=ok, group=group) -> str:
            if ok is not None and not ok(m):
                return m.group(0)
            counts[kind] = counts.get(kind, 0) + 1
            if group:
                return m.group(0)[: m.start(group) - m.start(0)] + MASKS[kind]
            return MASKS[kind]

        text = pattern.sub(repl, text)
    return text, counts


class PiiFilter(Rule):
    """PII as one more filter in the clean chain: mask replaces PII by placeholders, drop removes documents
    containing any, keep counts only. Registered as `pii` through `register_filters` like every rule, so the
    clean stage counts what it drops/modifies per language as for any other rule; `found` counts PII by kind."""

    name = "pii"
    MODES = ("mask", "drop", "keep")

    def __init__(self, mode: str = "mask"):
        if mode not in self.MODES:
            from llmctl.core.errors import UserError

            raise UserError(f"--pii must be mask, drop or keep, got '{mode}'")
        self.mode = mode
        self._found: dict[str, int] = {}

    @property
    def found(self) -> dict[str, int]:
        return self._found

    def __call__(self, text: str) -> str | None:
        new, counts = mask_pii(text)
        for k, v in counts.items():
            self._found[k] = self._found.get(k, 0) + v
        if not counts or self.mode == "keep":
            return text
        return None if self.mode == "drop" else new


__all__ = ["mask_pii", "find_pii", "PiiFilter", "MASKS"]
