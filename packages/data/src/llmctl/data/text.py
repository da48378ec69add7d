"""Character-class statistics and a cheap language guess, shared by sampling, cleaning rules and reports."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# CJK unified ideographs (+ ext A, compatibility), the scripts we count as "zh" characters.
CJK_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK = re.compile(f"[{CJK_RANGES}]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_DIGIT = re.compile(r"[0-9\uff10-\uff19]")
_SPACE = re.compile(r"\s")


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


@dataclass(frozen=True)
class CharStats:
    """Counts over the non-whitespace characters of a text (ratios ignore whitespace)."""

    chars: int
    zh: int
    en: int
    digit: int
    punct: int

    def ratio(self, n: int) -> float:
        return n / self.chars if self.chars else 0.0


def char_stats(text: str) -> CharStats:
    zh = len(_CJK.findall(text))
    en = len(_LATIN.findall(text))
    digit = len(_DIGIT.findall(text))
    space = len(_SPACE.findall(text))
    chars = len(text) - space
    other = chars - zh - en - digit
    # Punctuation/symbols are what is left that is not a letter of another script; count only when needed.
    punct = sum(1 for ch in text if _is_punct(ch)) if other else 0
    return CharStats(chars, zh, en, digit, punct)


def detect_lang(text: str, sample: int = 2000) -> str:
    """'zh' when CJK characters are at least 30% of the letters, 'en' when Latin letters dominate, else 'other'.

    A character-class guess, not a language model: good enough to split zh/en corpora in reports and sampling.
    """
    head = text[:sample]
    zh = len(_CJK.findall(head))
    en = len(_LATIN.findall(head))
    if zh + en == 0:
        return "other"
    # one CJK character carries roughly a word's worth of content; weigh Latin letters down accordingly
    if zh >= 0.3 * (zh + en / 4):
        return "zh"
    return "en"


_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def word_count(text: str) -> int:
    """Words for English-like text; every CJK character counts as one word."""
    zh = len(_CJK.findall(text))
    return zh + len(_WORD.findall(_CJK.sub(" ", text)))
