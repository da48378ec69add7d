"""Character-class statistics and a cheap language guess, shared by sampling, cleaning rules and reports."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

# CJK unified ideographs (+ ext A, compatibility), the scripts we count as "zh" characters.
CJK_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK = re.compile(f"[{CJK_RANGES}]")
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
    counts = np.bincount(_classes(_codepoints(text)), minlength=4)
    zh, en, digit = int(counts[1]), int(counts[2]), int(counts[3])
    space = len(_SPACE.findall(text)) if not text.isascii() else sum(map(text.count, " \t\n\r\x0b\x0c"))
    chars = len(text) - space
    other = chars - zh - en - digit
    # Punctuation/symbols are what is left that is not a letter of another script; count only when needed.
    punct = sum(1 for ch in text if _is_punct(ch)) if other else 0
    return CharStats(chars, zh, en, digit, punct)


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _class_table() -> np.ndarray:
    """Per BMP code point: 0 other, 1 CJK ideograph (zh), 2 Latin letter (en), 3 digit."""
    t = np.zeros(0x10000, dtype=np.uint8)
    for lo, hi in ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF)):
        t[lo : hi + 1] = 1
    t[0x41:0x5B] = t[0x61:0x7B] = t[0xC0:0x250] = 2
    t[0xD7] = t[0xF7] = 0  # × and ÷
    t[0x30:0x3A] = t[0xFF10:0xFF1A] = 3
    return t


_TABLE = _class_table()


def _classes(cp: np.ndarray) -> np.ndarray:
    return _TABLE[np.minimum(cp, 0xFFFF)]


def _count_zh_en(cp: np.ndarray) -> tuple[int, int]:
    counts = np.bincount(_classes(cp), minlength=4)
    return int(counts[1]), int(counts[2])


def detect_langs(texts: list[str], sample: int = 2000) -> list[str]:
    """`detect_lang` for a batch of texts at once (one numpy pass over all their code points)."""
    if not texts:
        return []
    heads = [t[:sample] for t in texts]
    cls = _classes(_codepoints("".join(heads)))
    bounds = np.cumsum([0] + [len(h) for h in heads])
    zh = (
        np.add.reduceat((cls == 1).astype(np.int64), bounds[:-1])
        if len(cls)
        else np.zeros(len(texts), np.int64)
    )
    en = (
        np.add.reduceat((cls == 2).astype(np.int64), bounds[:-1])
        if len(cls)
        else np.zeros(len(texts), np.int64)
    )
    empty = bounds[1:] == bounds[:-1]  # reduceat gives the next element for an empty segment
    zh[empty] = 0
    en[empty] = 0
    return [_decide(int(z), int(e)) for z, e in zip(zh, en)]


def _decide(zh: int, en: int) -> str:
    if zh + en == 0:
        return "other"
    # one CJK character carries roughly a word's worth of content; weigh Latin letters down accordingly
    return "zh" if zh >= 0.3 * (zh + en / 4) else "en"


def detect_lang(text: str, sample: int = 2000) -> str:
    """'zh' when CJK characters are at least 30% of the letters, 'en' when Latin letters dominate, else 'other'.

    A character-class guess, not a language model: good enough to split zh/en corpora in reports and sampling.
    Counted with numpy over code points (this runs once per document in every stage's report).
    """
    return _decide(*_count_zh_en(_codepoints(text[:sample])))


_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def word_count(text: str) -> int:
    """Words for English-like text; every CJK character counts as one word."""
    zh = len(_CJK.findall(text))
    return zh + len(_WORD.findall(_CJK.sub(" ", text)))
