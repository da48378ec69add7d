"""Cleaning rules: each is a registered filter (`register_filters` hook) built from YAML parameters.

A filter is called with a document's text and returns the text to keep (possibly edited, e.g. boilerplate
lines removed) or None to drop the document; one that sets `uses_document = True` (the `score` rule, which reads
a classifier's column) is called with the `Document` too. The clean stage counts docs/bytes per rule and
language. The default rule set is `DEFAULT_RULES`; a rules file is YAML:

    rules:
      - boilerplate_lines                      # a name alone uses the defaults
      - min_length: {min_chars: 200}
      - keyword_blocklist: {words: [新冠, 疫情], max_hits: 2}

Defaults are deliberately lenient (they must not skew the zh/en mix: check the per-language report).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

from llmctl.core.errors import UserError

from ..text import CJK_RANGES, char_stats, detect_lang, word_count

Filter = Callable[[str], "str | None"]


class Rule:
    """Base class: `name`, keyword parameters with defaults, and `__call__(text) -> text | None`."""

    name = "rule"

    def __call__(self, text: str) -> str | None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {self.name: {k: v for k, v in vars(self).items() if not k.startswith("_")}}


class MinLength(Rule):
    """Too short to teach anything: fewer than `min_chars` non-space characters or `min_words` words."""

    name = "min_length"

    def __init__(self, min_chars: int = 20, min_words: int = 0):
        self.min_chars, self.min_words = min_chars, min_words

    def __call__(self, text):
        if len(text) - text.count(" ") < self.min_chars:
            return None
        if self.min_words and word_count(text) < self.min_words:
            return None
        return text


class MaxLength(Rule):
    """Extremely long documents (dumps, logs) that one bad page can turn into a loss spike."""

    name = "max_length"

    def __init__(self, max_chars: int = 1_000_000):
        self.max_chars = max_chars

    def __call__(self, text):
        return None if len(text) > self.max_chars else text


class CharRatios(Rule):
    """Share of letters (zh + en), digits and punctuation among non-space characters; optional zh/en bounds."""

    name = "char_ratios"

    def __init__(
        self,
        min_letter_ratio: float = 0.4,
        max_digit_ratio: float = 0.5,
        max_punct_ratio: float = 0.4,
        min_zh_ratio: float = 0.0,
        max_zh_ratio: float = 1.0,
        min_en_ratio: float = 0.0,
        max_en_ratio: float = 1.0,
    ):
        self.min_letter_ratio, self.max_digit_ratio, self.max_punct_ratio = (
            min_letter_ratio,
            max_digit_ratio,
            max_punct_ratio,
        )
        self.min_zh_ratio, self.max_zh_ratio = min_zh_ratio, max_zh_ratio
        self.min_en_ratio, self.max_en_ratio = min_en_ratio, max_en_ratio

    def __call__(self, text):
        s = char_stats(text)
        if not s.chars:
            return None
        zh, en = s.ratio(s.zh), s.ratio(s.en)
        if zh + en < self.min_letter_ratio or s.ratio(s.digit) > self.max_digit_ratio:
            return None
        if s.ratio(s.punct) > self.max_punct_ratio:
            return None
        if not (
            self.min_zh_ratio <= zh <= self.max_zh_ratio and self.min_en_ratio <= en <= self.max_en_ratio
        ):
            return None
        return text


class RepeatedLines(Rule):
    """Gopher-style repetition: too many duplicated lines, or too many characters in duplicated lines."""

    name = "repeated_lines"

    def __init__(self, max_dup_line_frac: float = 0.3, max_dup_char_frac: float = 0.2, min_lines: int = 3):
        self.max_dup_line_frac, self.max_dup_char_frac, self.min_lines = (
            max_dup_line_frac,
            max_dup_char_frac,
            min_lines,
        )

    def __call__(self, text):
        lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
        if len(lines) < self.min_lines:
            return text
        counts = Counter(lines)
        dup_lines = sum(c for c in counts.values() if c > 1)
        dup_chars = sum(len(ln) * c for ln, c in counts.items() if c > 1)
        if dup_lines / len(lines) > self.max_dup_line_frac:
            return None
        if dup_chars / max(1, sum(len(ln) for ln in lines)) > self.max_dup_char_frac:
            return None
        return text


_TOKEN = re.compile(f"[{CJK_RANGES}]|[^\\W_]+", re.UNICODE)


class RepeatedNgrams(Rule):
    """Share of tokens (words; CJK characters one each) covered by n-grams that occur more than once.

    n is `n` words for English-like text and `n_zh` characters for Chinese (a character is about half a word,
    and Chinese templates repeat short character runs legitimately).
    """

    name = "repeated_ngrams"

    def __init__(self, n: int = 5, n_zh: int = 10, max_dup_frac: float = 0.3, min_tokens: int = 20):
        self.n, self.n_zh, self.max_dup_frac, self.min_tokens = n, n_zh, max_dup_frac, min_tokens

    def __call__(self, text):
        toks = _TOKEN.findall(text.lower())
        n = self.n_zh if detect_lang(text) == "zh" else self.n
        if len(toks) < max(self.min_tokens, n):
            return text
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        counts = Counter(grams)
        covered = bytearray(len(toks))
        for i, g in enumerate(grams):
            if counts[g] > 1:
                covered[i : i + n] = b"\x01" * n
        return None if sum(covered) / len(toks) > self.max_dup_frac else text


_URL = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"'，。）)]+")


class UrlDensity(Rule):
    """Link farms and spam: too many URLs per 100 words, too much of the text inside URLs, or 'http' spam."""

    name = "url_density"

    def __init__(
        self, max_urls_per_100_words: float = 5.0, max_url_char_frac: float = 0.2, max_http: int = 20
    ):
        self.max_urls_per_100_words, self.max_url_char_frac, self.max_http = (
            max_urls_per_100_words,
            max_url_char_frac,
            max_http,
        )

    def __call__(self, text):
        if "http" not in text and "www." not in text:
            return text
        urls = _URL.findall(text)
        words = max(1, word_count(_URL.sub(" ", text)))
        if len(urls) * 100 / words > self.max_urls_per_100_words:
            return None
        if sum(len(u) for u in urls) / max(1, len(text)) > self.max_url_char_frac:
            return None
        if text.count("http") > self.max_http:
            return None
        return text


DEFAULT_BLOCKLIST = (
    "casino",
    "viagra",
    "porn",
    "xxx video",
    "payday loan",
    "博彩",
    "赌博网站",
    "色情",
    "裸聊",
    "六合彩",
    "代开发票",
    "私服",
)


class KeywordBlocklist(Rule):
    """Documents mentioning blocked keywords more than `max_hits` times (case-insensitive substring match)."""

    name = "keyword_blocklist"

    def __init__(self, words: Sequence[str] = DEFAULT_BLOCKLIST, max_hits: int = 0):
        self.words, self.max_hits = [w.lower() for w in words], max_hits
        self._pattern = re.compile("|".join(re.escape(w) for w in self.words)) if self.words else None

    def __call__(self, text):
        if self._pattern is None:
            return text
        hits = len(self._pattern.findall(text.lower()))
        return None if hits > self.max_hits else text


DEFAULT_BOILERPLATE = (
    r"^\s*(本文)?转载(自|于|请注明)",
    r"^\s*(文章)?来源[:：]",
    r"^\s*原标题[:：]",
    r"^\s*(责任编辑|责编|编辑)[:：]",
    r"^\s*版权(所有|声明)",
    r"^\s*(免责声明|声明)[:：]",
    r"^\s*(点击|扫码)(关注|查看|阅读原文)",
    r"阅读原文\s*$",
    r"^\s*(copyright|\(c\)|©)\s",
    r"all rights reserved",
    r"^\s*(click here|share this|subscribe to)",
    r"^\s*(posted|published) (on|by)\b",
    r"^\s*(tags|categories)\s*:",
)
DEFAULT_REFERENCE_HEADINGS = (
    r"^\s*(references|bibliography|works cited|参考文献|参考资料|引用)\s*[:：]?\s*$",
)


class BoilerplateLines(Rule):
    """Remove boilerplate lines ("转载自…", "责任编辑：…", copyright footers) and trailing reference sections.

    Patterns are regular expressions matched case-insensitively against each line.
    """

    name = "boilerplate_lines"

    def __init__(
        self,
        patterns: Sequence[str] = DEFAULT_BOILERPLATE,
        reference_headings: Sequence[str] = DEFAULT_REFERENCE_HEADINGS,
    ):
        self.patterns, self.reference_headings = list(patterns), list(reference_headings)
        try:
            self._line = [re.compile(p, re.IGNORECASE) for p in self.patterns]
            self._refs = [re.compile(p, re.IGNORECASE) for p in self.reference_headings]
        except re.error as e:
            raise UserError(f"boilerplate_lines: bad pattern ({e})") from None

    def __call__(self, text):
        lines = text.split("\n")
        out = []
        for ln in lines:
            if any(p.search(ln) for p in self._refs):
                break  # everything after a reference heading is the reference list
            if any(p.search(ln) for p in self._line):
                continue
            out.append(ln)
        if len(out) == len(lines):
            return text
        return "\n".join(out).strip("\n")


from .pii import PiiFilter  # noqa: E402  (needs Rule above)
from .score import ScoreRule  # noqa: E402

BUILTIN_FILTERS: dict[str, type[Rule]] = {
    cls.name: cls
    for cls in (
        BoilerplateLines,
        MinLength,
        MaxLength,
        CharRatios,
        RepeatedLines,
        RepeatedNgrams,
        UrlDensity,
        KeywordBlocklist,
        PiiFilter,
        ScoreRule,
    )
}

DEFAULT_RULES: list[Any] = [
    "boilerplate_lines",
    "min_length",
    "max_length",
    "url_density",
    "keyword_blocklist",
    "char_ratios",
    "repeated_lines",
    "repeated_ngrams",
]


def filter_registry() -> dict[str, Callable[..., Filter]]:
    """Every registered cleaning rule (built-ins and plugins); a broken plugin is an error, not a fall-back."""
    from llmctl.core.plugins import get_bus

    return {name: e.value for name, e in get_bus().registry("filters").items()}


def build_rules(spec: str | Sequence[Any] | None = "default") -> list[tuple[str, Filter]]:
    """[(name, filter)] from "default", "none", a YAML file path, or a list of names / {name: params}."""
    where = "rules"
    if spec is None or spec == "none":
        return []
    if isinstance(spec, str):
        if spec == "default":
            items: Sequence[Any] = DEFAULT_RULES
        else:
            from llmctl.core.config import read_yaml

            path = Path(spec)
            where = str(path)
            if not path.is_file():
                raise UserError(f"--rules {spec}: not 'default', 'none' or an existing YAML file")
            data = read_yaml(path)
            items = data.get("rules", []) if isinstance(data, dict) else data
            if not isinstance(items, list):
                raise UserError(f"{path}: expected a list of rules (or a mapping with a 'rules' list)")
    else:
        items = spec
    registry = filter_registry()
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, params = next(iter(item.items()))
            params = params or {}
        else:
            raise UserError(f"{where}: rule {i} must be a name or a one-key mapping name: {{params}}")
        if name not in registry:
            raise UserError(f"{where}: unknown rule '{name}'; available: {', '.join(sorted(registry))}")
        try:
            out.append((name, registry[name](**params)))
        except TypeError as e:
            raise UserError(f"{where}: rule '{name}': {e}") from None
    return out
