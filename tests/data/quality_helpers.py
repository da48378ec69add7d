"""Texts for the classifier tests: real prose, code and math, and the low-quality side the tests build.

Prose: Alpaca answers and Shakespeare paragraphs (../shared/fixtures). Code: this repository's own Python
source cut into chunks, plus generated functions. Math: MMLU's mathematics questions with their choices, plus
generated equations. Spam/boilerplate is generated: navigation menus, calls to action, keyword stuffing, link
lists and copyright footers around scraps of prose, which is what a quality scorer must learn to push down.
A caller requests the `real_fixtures` fixture. A uniquely named module (`from conftest import` is ambiguous).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from data_helpers import REPO, TEXT_CORPUS, write_jsonl
from real_data import FIXTURES


def prose_texts(n: int | None = None) -> list[str]:
    alpaca = json.loads((FIXTURES / "alpaca" / "alpaca_data.json").read_text(encoding="utf-8"))
    answers = [
        x["output"]
        for x in alpaca
        if len(x["output"]) > 150 and "def " not in x["output"] and "{" not in x["output"]
    ]
    plays = [
        p
        for p in (TEXT_CORPUS / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split("\n\n")
        if len(p) > 150
    ]
    out = [t for pair in zip(answers, plays) for t in pair] + answers[len(plays) :]
    return out[:n] if n else out


def chinese_texts(n: int = 100) -> list[str]:
    lines = (TEXT_CORPUS / "tatoeba" / "tatoeba.cmn-eng.cmn").read_text(encoding="utf-8").splitlines()
    return ["".join(lines[i : i + 4]) for i in range(0, 4 * n, 4) if lines[i : i + 4]]


SPAM = [
    "Click here",
    "BUY NOW!!!",
    "best price guaranteed",
    "free shipping on all orders",
    "casino bonus",
    "subscribe to our newsletter",
    "limited time offer",
    "Home | About | Contact | Login",
    "cheap pills",
    "© 2024 All rights reserved.",
    "http://cheap-deals.example.com/offer?id=",
    "Share this on Facebook",
    "Tags: deals, discount, sale",
    "Posted by admin",
    "Read more >>",
    "Sign up today and win",
]


def spam_texts(n: int, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    words = " ".join(prose_texts(200)).split()
    out = []
    for _ in range(n):
        parts = []
        for _ in range(r.randint(5, 14)):
            if r.random() < 0.55:
                p = r.choice(SPAM)
                parts.append(p + str(r.randint(1, 999)) if p.startswith("http") else p)
            else:
                parts.append(" ".join(r.choice(words) for _ in range(r.randint(2, 6))))
        out.append((" " if r.random() < 0.5 else "\n").join(parts))
    return out


def code_texts(n: int, seed: int = 0) -> list[str]:
    """Chunks of 12 lines of this repository's Python source, alternating with generated functions."""
    r = random.Random(seed)
    chunks = []
    for path in sorted((REPO / "packages").glob("*/src/llmctl/**/*.py")):
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        chunks += ["\n".join(lines[i : i + 12]) for i in range(0, len(lines) - 12, 12)]
    r.shuffle(chunks)
    names = ["total", "items", "count", "value", "result", "index", "buffer", "size"]
    out = []
    for i in range(n):
        if i % 3 == 2:
            a, b = r.sample(names, 2)
            out.append(
                f"def compute_{a}({a}, {b}=0):\n    for i in range(len({a})):\n        {b} += {a}[i] * {i}\n"
                f"    if {b} > {r.randint(1, 99)}:\n        return {b}\n    return None\n"
            )
        else:
            out.append(chunks[i % len(chunks)])
    return out


def math_texts(n: int, seed: int = 0) -> list[str]:
    """MMLU mathematics questions with their choices, alternating with generated equations."""
    r = random.Random(seed)
    qs = []
    for name in ("college_mathematics", "abstract_algebra", "high_school_physics"):
        for split in ("test", "val", "dev"):
            with open(FIXTURES / "mmlu" / "data" / split / f"{name}_{split}.csv", encoding="utf-8") as f:
                qs += [
                    f"{row[0]} (A) {row[1]} (B) {row[2]} (C) {row[3]} (D) {row[4]}" for row in csv.reader(f)
                ]
    r.shuffle(qs)
    out = []
    for i in range(n):
        if i % 3 == 2:
            a, b, c = r.randint(2, 9), r.randint(1, 50), r.randint(51, 200)
            out.append(
                f"Solve {a}x + {b} = {c}. Subtracting {b} gives {a}x = {c - b}, so x = {c - b}/{a}. "
                f"Then x^2 = ({c - b})^2/{a * a} and the integral of x^2 dx is x^3/3 + C."
            )
        else:
            out.append(qs[i % len(qs)])
    return out


def write_quality_set(path: Path, n: int = 600, seed: int = 0) -> Path:
    """Labelled jsonl: prose label 1, spam label 0, interleaved."""
    good, bad = prose_texts(n), spam_texts(n, seed)
    rows = [{"text": t, "label": lab} for pair in zip(good, bad) for t, lab in zip(pair, (1, 0))]
    return write_jsonl(path, rows)


def write_domain_set(path: Path, n: int = 300, seed: int = 0) -> Path:
    """Labelled jsonl: domain prose / code / math."""
    rows = []
    for items in zip(prose_texts(n), code_texts(n, seed), math_texts(n, seed)):
        rows += [{"text": t, "domain": d} for t, d in zip(items, ("prose", "code", "math"))]
    return write_jsonl(path, rows)
