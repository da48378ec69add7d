"""MinHash against datasketch, and exact + near-duplicate removal within and across shards."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
from data_helpers import read_jsonl, run_cli, write_jsonl

from llmctl.data.dedup.minhash import MinHasher, jaccard_estimate, optimal_bands

datasketch = pytest.importorskip(
    "datasketch", reason="datasketch (requirements-test.txt) is the MinHash reference"
)
ZH = "".join(chr(0x4E00 + i) for i in range(2500))


def _shingles(text: str, n: int = 5) -> set[str]:
    """The same shingles llmctl hashes: n-grams of lower-cased words, or of single CJK characters."""
    toks = re.findall(r"[\u4e00-\u9fff]|[^\W_]+", text.lower())
    return {" ".join(toks[i : i + n]) for i in range(max(1, len(toks) - n + 1))}


def _pair(r: random.Random, words: list[str], zh: bool) -> tuple[str, str]:
    base = r.choices(ZH if zh else words, k=r.randint(40, 250))
    frac = r.random() * 0.5
    other = [r.choice(ZH if zh else words) if r.random() < frac else t for t in base]
    sep = "" if zh else " "
    return sep.join(base), sep.join(other)


def test_minhash_jaccard_agrees_with_datasketch():
    r = random.Random(0)
    words = ["".join(r.choices("abcdefghijklmnop", k=r.randint(2, 7))) for _ in range(3000)]
    pairs = [_pair(r, words, zh=i % 3 == 0) for i in range(240)]
    ours, ref, true = [], [], []
    hasher = MinHasher(num_perm=256, ngram=5)
    sigs = hasher.signatures([t for p in pairs for t in p])
    for k, (a, b) in enumerate(pairs):
        sa, sb = _shingles(a), _shingles(b)
        true.append(len(sa & sb) / len(sa | sb))
        ma, mb = datasketch.MinHash(num_perm=256), datasketch.MinHash(num_perm=256)
        ma.update_batch([s.encode() for s in sa])
        mb.update_batch([s.encode() for s in sb])
        ref.append(ma.jaccard(mb))
        ours.append(float(jaccard_estimate(sigs[2 * k], sigs[2 * k + 1])))
    ours, ref, true = map(np.asarray, (ours, ref, true))
    assert true.min() < 0.2 and true.max() > 0.6  # a spread of similarities, not all near 0
    assert np.mean(np.abs(ours - ref)) < 0.05
    assert np.mean(np.abs(ours - true)) < 0.05 and abs(np.mean(ours - true)) < 0.01  # unbiased too


@pytest.mark.parametrize("threshold,num_perm", [(0.5, 64), (0.8, 128), (0.9, 128), (0.7, 256)])
def test_auto_bands_rows_match_datasketch_lsh(threshold, num_perm):
    lsh = datasketch.MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert optimal_bands(threshold, num_perm) == (lsh.b, lsh.r)


def _planted_corpus(root):
    """Distinct random docs in 3 files plus planted exact/near duplicates of docs in *other* files."""
    r = random.Random(1)
    words = ["".join(r.choices("abcdefghijklmnopqrst", k=r.randint(3, 8))) for _ in range(5000)]
    docs = [" ".join(r.choices(words, k=r.randint(60, 150))) for _ in range(240)]
    docs += ["".join(r.choices(ZH, k=r.randint(80, 200))) for _ in range(60)]
    files = [[{"id": f"d{i}", "text": d} for i, d in enumerate(docs) if i % 3 == k] for k in range(3)]
    planted = []
    for i in range(0, 300, 15):
        d = docs[i]
        if i < 240:
            w = d.split()
            w[len(w) // 2] = "edited"
            near = " ".join(w)
        else:
            near = d[:50] + "改" + d[51:]
        planted.append({"id": f"near{i}", "text": near})
    planted.append({"id": "exact3", "text": docs[3].upper().replace(" ", "  ") + "!!"})
    planted.append({"id": "exact250", "text": docs[250]})
    for k in range(3):  # each planted copy lives in a different file than its original
        files[(k + 1) % 3].extend(p for j, p in enumerate(planted) if j % 3 == k)
    for k, rows in enumerate(files):
        write_jsonl(root / f"part-{k}.jsonl", rows)
    return {p["id"] for p in planted}


def _kept_ids(out):
    return {row["id"] for f in sorted(out.glob("part-*.jsonl")) for row in read_jsonl(f)}


def test_planted_duplicates_removed_across_shards_distinct_kept(tmp_path):
    planted = _planted_corpus(tmp_path / "in")
    res = run_cli(
        ["data", "dedup", "--input", tmp_path / "in", "--output", tmp_path / "out", "--num-shards", "3"]
    )
    assert res.exit_code == 0, res.output
    kept = _kept_ids(tmp_path / "out")
    assert len(kept) == 300 and not kept & planted  # every original kept, every planted copy removed
    pairs = read_jsonl(tmp_path / "out" / "_pairs.jsonl")
    assert len(pairs) == len(planted)
    methods = {p["removed"]: p["method"] for p in pairs}
    assert sorted(methods.values()).count("exact") == 2
    assert all(p["similarity"] >= 0.7 for p in pairs)
    report = json.loads((tmp_path / "out" / "_report.json").read_text())
    assert report["join"]["removed"] == len(planted) and report["stats"]["kept"]["docs"] == 300
    assert set(report["stats"]["dropped"]["duplicate-minhash"]["by_lang"]) == {"en", "zh"}


def test_cluster_phases_match_the_local_run(tmp_path):
    _planted_corpus(tmp_path / "in")
    base = ["data", "dedup", "--input", tmp_path / "in", "--output", tmp_path / "out", "--num-shards", "3"]
    res = run_cli(base + ["--phase", "join"])
    assert res.exit_code == 2 and "shard 0 of 3" in res.output  # join before signatures: one-line error
    for i in range(3):
        assert run_cli(base + ["--phase", "signatures", "--shard-index", str(i)]).exit_code == 0
    assert run_cli(base + ["--phase", "join"]).exit_code == 0
    for i in range(3):
        assert run_cli(base + ["--phase", "apply", "--shard-index", str(i)]).exit_code == 0
    local = tmp_path / "local"
    assert (
        run_cli(
            ["data", "dedup", "--input", tmp_path / "in", "--output", local, "--num-shards", "3"]
        ).exit_code
        == 0
    )
    assert _kept_ids(tmp_path / "out") == _kept_ids(local)


def test_exact_only_and_single_file_output(tmp_path):
    rows = [
        {"text": "Hello, World!"},
        {"text": "hello world"},
        {"text": "HELLO   world!!!"},
        {"text": "你好，世界"},
        {"text": "你好 世界"},
        {"text": "something else entirely"},
    ]
    write_jsonl(tmp_path / "in.jsonl", rows)
    res = run_cli(
        [
            "data",
            "dedup",
            "--input",
            tmp_path / "in.jsonl",
            "--output",
            tmp_path / "o" / "dedup.jsonl",
            "--exact",
            "--workers",
            "1",
        ]
    )
    assert res.exit_code == 0, res.output
    assert [r["text"] for r in read_jsonl(tmp_path / "o" / "dedup.jsonl")] == [
        "Hello, World!",
        "你好，世界",
        "something else entirely",
    ]
    assert (tmp_path / "o" / "_dedup.jsonl.pairs.jsonl").is_file()
