"""Helpers for the llmctl-data tests: fixture paths, an in-process CLI runner, fixture text.

A uniquely named module: `from conftest import` is ambiguous across test folders.
"""

from __future__ import annotations

import json
from pathlib import Path

from real_data import FIXTURES

REPO = Path(__file__).resolve().parents[2]
TEXT_CORPUS = FIXTURES / "text_corpus"

MIXED_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "Numbers 3 + 4 = 7 and 12 + 30 = 42; emoji 😀🎉 too.",
    "  leading spaces, tabs\tand\nnew lines  ",
    "混合 text 中英文 mixed 123。",
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def run_cli(args: list[str]):
    """Invoke `llmctl …` in-process (the real click group built from the plugin bus)."""
    from click.testing import CliRunner

    from llmctl.cli.main import build_cli

    return CliRunner().invoke(build_cli(), [str(a) for a in args], catch_exceptions=True)


def run_tokenize(inp, tokenizer, prefix, *extra):
    """`llmctl data tokenize --input INP --tokenizer TOKENIZER --output-prefix PREFIX EXTRA...` in-process."""
    return run_cli(
        ["data", "tokenize", "--input", inp, "--tokenizer", tokenizer, "--output-prefix", prefix, *extra]
    )


def fixture_texts(max_chinese_lines: int = 3000) -> list[str]:
    """English (tinyshakespeare paragraphs, tatoeba) and Chinese (tatoeba, classical poetry) documents, from the
    real-data fixtures: a caller requests the `real_fixtures` fixture (directly or via `fixture_corpus`)."""
    docs = [
        p
        for p in (TEXT_CORPUS / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split("\n\n")
        if p
    ]
    for name in ("tatoeba.cmn-eng.eng", "tatoeba.cmn-eng.cmn"):
        docs += [ln for ln in (TEXT_CORPUS / "tatoeba" / name).read_text(encoding="utf-8").splitlines() if ln]
    lines: list[str] = []

    def walk(x):
        if isinstance(x, str):
            if len(x) > 4:
                lines.append(x)
        elif isinstance(x, list):
            for y in x:
                walk(y)
        elif isinstance(x, dict):
            for y in x.values():
                walk(y)

    for p in sorted((TEXT_CORPUS / "chinese_poetry").glob("*.json")):
        walk(json.loads(p.read_text(encoding="utf-8")))
    return docs + lines[:max_chinese_lines]
