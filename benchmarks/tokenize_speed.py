"""Tokenize throughput and memory: `llmctl data tokenize --workers N` against the tokenizer's own `encode_batch`
on the same text, measured in one run; then peak RSS on a corpus several times larger (it should stay flat).

    python benchmarks/tokenize_speed.py                     # ~30 MB corpus from ../shared/fixtures, 2 workers
    python benchmarks/tokenize_speed.py --mb 100 --big-mb 1000 --workers 8 --tokenizer path/to/tokenizer_dir
    python benchmarks/tokenize_speed.py --json-memory        # peak RSS on whole-file .json of 30 MB vs 150 MB

The corpus is built from the fixture texts (tinyshakespeare, tatoeba, chinese-poetry) repeated with varying
line order, as jsonl. The baseline holds every document in memory and calls `encode_batch` on chunks (the
Rust side uses every core); llmctl's number includes process start, reading jsonl, the train/val split and
writing .bin/.idx. Peak RSS is the largest of the command's processes (parent or worker), via getrusage.
This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / ".." / "shared" / "fixtures" / "text_corpus"
sys.path[:0] = [str(REPO / "tests" / "data"), str(REPO / "tests")]


def base_documents() -> list[str]:
    from data_helpers import fixture_texts  # the same fixture reader the tests use

    return [t for t in fixture_texts(max_chinese_lines=100_000) if t.strip()]


def build_corpus(path: Path, mb: float, seed: int = 0) -> int:
    """Write about `mb` MB of jsonl documents (fixture texts joined into 1-4 KB documents)."""
    docs = base_documents()
    r = random.Random(seed)
    target = int(mb * 2**20)
    written = n = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            k = r.randint(3, 12)
            text = "\n".join(r.choice(docs) for _ in range(k))
            line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode())
            n += 1
    return n


def to_json_list(jsonl: Path, out: Path) -> Path:
    """The same documents as one whole-file JSON list (the layout that used to be loaded whole)."""
    with open(jsonl, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as f:
        f.write("[")
        for i, line in enumerate(src):
            f.write(("," if i else "") + line.strip())
        f.write("]")
    jsonl.unlink()
    return out


def json_memory(work: Path, tok_dir: Path, mbs: tuple[float, float], workers: int) -> None:
    """Peak RSS of `llmctl data tokenize` on whole-file .json inputs of two sizes: streamed, it stays flat."""
    peaks = []
    for mb in mbs:
        build_corpus(work / f"c{mb:.0f}.jsonl", mb, seed=3)
        corpus = to_json_list(work / f"c{mb:.0f}.jsonl", work / f"c{mb:.0f}.json")
        o = run_llmctl(corpus, tok_dir, work / f"json{mb:.0f}" / "c", workers)
        peaks.append(o["peak_rss_mb"])
        print(f"whole-file .json {mb:.0f} MB: peak RSS {o['peak_rss_mb']:.0f} MB, {o['tokens_per_s']:,.0f} tokens/s")
        corpus.unlink()
    print(f"peak RSS {mbs[1]:.0f} MB vs {mbs[0]:.0f} MB .json: {100 * (peaks[1] / peaks[0] - 1):+.1f}% (target < 20%)")


def baseline(corpus: Path, tokenizer_dir: Path, chunk: int = 1024) -> dict:
    from llmctl.data.hf_tokenizer import load_tokenizer_info

    texts = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")]
    tok = load_tokenizer_info(tokenizer_dir).load()
    t0 = time.perf_counter()
    tokens = 0
    t_ids = 0.0
    for i in range(0, len(texts), chunk):
        enc = tok.encode_batch(texts[i : i + chunk], add_special_tokens=False)
        t1 = time.perf_counter()
        tokens += sum(len(e.ids) for e in enc)  # the ids are what anyone writing a dataset needs
        t_ids += time.perf_counter() - t1
    total = time.perf_counter() - t0
    return {
        "tokens": tokens,
        "seconds": total,
        "tokens_per_s": tokens / total,
        "encode_only_tokens_per_s": tokens / (total - t_ids),
    }


# runs the command and prints the peak RSS of its process tree (the largest single process), from a fresh parent
_PEAK = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def run_llmctl(corpus: Path, tokenizer_dir: Path, prefix: Path, workers: int) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            _PEAK,
            sys.executable,
            "-m",
            "llmctl.cli",
            "data",
            "tokenize",
            "--input",
            str(corpus),
            "--tokenizer",
            str(tokenizer_dir),
            "--output-prefix",
            str(prefix),
            "--workers",
            str(workers),
            "--val-ratio",
            "0.01",
            "--no-append-eod",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "LLMCTL_PROGRESS": "0"},
    )
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(res.stderr)
    report = json.loads(Path(f"{prefix}_tokenize.json").read_text())
    tokens = sum(o["tokens"] for o in report["outputs"].values())
    peak_kb = int(res.stderr.strip().splitlines()[-1])
    return {"tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall, "peak_rss_mb": peak_kb / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=30, help="Corpus size for the speed comparison.")
    ap.add_argument("--big-mb", type=float, default=150, help="Larger corpus for the memory check (0: skip).")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--tokenizer", default=None, help="Tokenizer dir (default: train a 32k spm-bpe on the fixtures)."
    )
    ap.add_argument(
        "--repeats", type=int, default=2, help="Interleaved repeats; the best of each is reported."
    )
    ap.add_argument("--json-memory", action="store_true", help="Only the whole-file .json peak-RSS comparison.")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmctl_tokbench_"))
    if args.tokenizer:
        tok_dir = Path(args.tokenizer)
    else:
        from llmctl.data.tokenizer_train import train_tokenizer

        train_corpus = work / "train.jsonl"
        build_corpus(train_corpus, 5, seed=1)
        tok_dir = work / "tok"
        train_tokenizer([str(train_corpus)], tok_dir, 32000, "spm-bpe", quiet=True)
    if args.json_memory:
        json_memory(work, tok_dir, (args.mb, args.big_mb or 150), args.workers)
        return
    corpus = work / "corpus.jsonl"
    n_docs = build_corpus(corpus, args.mb)
    print(f"corpus: {args.mb:.0f} MB, {n_docs:,} documents; tokenizer: {tok_dir}; cores: {os.cpu_count()}")
    best_base, best_ours = None, None
    for r in range(args.repeats):  # interleaved so machine noise hits both alike
        b = baseline(corpus, tok_dir)
        o = run_llmctl(corpus, tok_dir, work / f"out{r}" / "c", args.workers)
        assert o["tokens"] == b["tokens"], (o["tokens"], b["tokens"])
        best_base = b if best_base is None or b["tokens_per_s"] > best_base["tokens_per_s"] else best_base
        best_ours = o if best_ours is None or o["tokens_per_s"] > best_ours["tokens_per_s"] else best_ours
        print(
            f"  run {r}: encode_batch {b['tokens_per_s']:,.0f} tok/s (encode only {b['encode_only_tokens_per_s']:,.0f}),"
            f" llmctl --workers {args.workers} {o['tokens_per_s']:,.0f} tok/s ({o['seconds']:.1f} s)"
        )
    print(f"tokens: {best_base['tokens']:,}")
    print(f"encode_batch (+ids):        {best_base['tokens_per_s']:>12,.0f} tokens/s")
    print(f"encode_batch (encode only): {best_base['encode_only_tokens_per_s']:>12,.0f} tokens/s")
    print(
        f"llmctl data tokenize:       {best_ours['tokens_per_s']:>12,.0f} tokens/s "
        f"(end to end: start, read, split, write)"
    )
    print(
        f"ratio llmctl / encode_batch(+ids):        {best_ours['tokens_per_s'] / best_base['tokens_per_s']:.2f}x "
        f"(target >= 0.9)"
    )
    print(
        f"ratio llmctl / encode_batch(encode only): "
        f"{best_ours['tokens_per_s'] / best_base['encode_only_tokens_per_s']:.2f}x"
    )
    print(f"peak RSS ({args.mb:.0f} MB corpus): {best_ours['peak_rss_mb']:.0f} MB")
    if args.big_mb:
        big = work / "big.jsonl"
        build_corpus(big, args.big_mb, seed=2)
        corpus.unlink()
        o = run_llmctl(big, tok_dir, work / "big" / "c", args.workers)
        print(
            f"peak RSS ({args.big_mb:.0f} MB corpus): {o['peak_rss_mb']:.0f} MB at {o['tokens_per_s']:,.0f} tokens/s "
            f"(target: flat, < 1024 MB)"
        )
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
