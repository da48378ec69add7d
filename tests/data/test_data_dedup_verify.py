"""MinHash dedup verifies LSH candidates by estimated Jaccard and removes greedily against kept documents."""

from __future__ import annotations

import random

import numpy as np
import pytest
from data_helpers import read_jsonl, run_cli, write_jsonl
from llmctl.data.dedup import greedy_removal
from llmctl.data.dedup.minhash import MinHasher, band_hashes, jaccard_estimate, optimal_bands

datasketch = pytest.importorskip(
    "datasketch", reason="datasketch (requirements-test.txt) is the MinHash reference"
)


def _words(n: int, seed: int) -> list[str]:
    r = random.Random(seed)
    return ["".join(r.choices("abcdefghijklmnopqrstuvwxyz", k=8)) for _ in range(n)]


def _shingles(text: str, n: int = 5) -> set[bytes]:
    toks = text.split()
    return {" ".join(toks[i : i + n]).encode() for i in range(len(toks) - n + 1)}


def _ds_jaccard(a: str, b: str, num_perm: int = 256) -> float:
    ma, mb = datasketch.MinHash(num_perm=num_perm), datasketch.MinHash(num_perm=num_perm)
    ma.update_batch(list(_shingles(a)))
    mb.update_batch(list(_shingles(b)))
    return ma.jaccard(mb)


def _share_band(sig: np.ndarray, i: int, j: int, bands: int, rows: int) -> bool:
    bh = band_hashes(sig, bands, rows)
    return bool((bh[i] == bh[j]).any())


def _dedup(tmp_path, rows_per_file: list[list[dict]], *opts) -> tuple[set[str], list[dict]]:
    for k, rows in enumerate(rows_per_file):
        write_jsonl(tmp_path / "in" / f"part-{k}.jsonl", rows)
    res = run_cli(
        ["data", "dedup", "--input", tmp_path / "in", "--output", tmp_path / "out", "--minhash"]
        + ["--num-shards", str(len(rows_per_file)), *opts]
    )
    assert res.exit_code == 0, res.output
    kept = {row["id"] for f in sorted((tmp_path / "out").glob("part-*.jsonl")) for row in read_jsonl(f)}
    return kept, read_jsonl(tmp_path / "out" / "_pairs.jsonl")


def test_lsh_false_positive_is_not_removed(tmp_path):
    # 16 bands of 1 row: any single equal minimum makes a candidate, so dissimilar pairs often collide
    hasher = MinHasher(num_perm=16, ngram=5, seed=1)
    words = _words(4000, 0)
    r = random.Random(1)
    for _ in range(200):
        a = r.sample(words, 120)
        b = [w if r.random() < 0.5 else r.choice(words) for w in a]
        near = list(a)
        near[60] = "edited"
        texts = [" ".join(a), " ".join(b), " ".join(near)]
        sig = hasher.signatures(texts)
        est = jaccard_estimate(sig[0], sig[1])
        if _share_band(sig, 0, 1, 16, 1) and est < 0.5 and jaccard_estimate(sig[0], sig[2]) >= 0.8:
            break
    else:
        pytest.fail("no false-positive candidate pair found")
    sa, sb = _shingles(texts[0]), _shingles(texts[1])
    assert len(sa & sb) / len(sa | sb) < 0.2  # truly dissimilar: a false positive of the LSH, not a near dup
    rows = [{"id": k, "text": t} for k, t in zip(("a", "fp", "near"), texts)]
    kept, pairs = _dedup(
        tmp_path, [rows], "--num-perm", "16", "--bands", "16", "--rows", "1", "--threshold", "0.8"
    )
    assert kept == {"a", "fp"}  # the candidate below threshold stays, the real near duplicate goes
    assert len(pairs) == 1 and pairs[0]["removed"].endswith(":2") and pairs[0]["kept"].endswith(":0")
    assert pairs[0]["jaccard"] >= 0.8 and pairs[0]["method"] == "minhash"


@pytest.mark.parametrize("num_shards", [1, 3])
def test_chain_keeps_both_ends(tmp_path, num_shards):
    """A~B and B~C but A not~C: A is kept, B goes as A's near duplicate, C stays (its only neighbour went)."""
    w = _words(400, 2)
    texts = [" ".join(w[0:300]), " ".join(w[25:325]), " ".join(w[50:350])]
    threshold, num_perm = 0.78, 256
    sig = MinHasher(num_perm=num_perm).signatures(texts)
    bands, rows = optimal_bands(threshold, num_perm)
    assert _share_band(sig, 0, 1, bands, rows) and _share_band(sig, 1, 2, bands, rows)  # B links A and C
    assert jaccard_estimate(sig[0], sig[1]) >= threshold and jaccard_estimate(sig[1], sig[2]) >= threshold
    assert jaccard_estimate(sig[0], sig[2]) < threshold - 0.05
    assert _ds_jaccard(texts[0], texts[2]) < threshold <= _ds_jaccard(texts[0], texts[1])
    rows_ = [{"id": k, "text": t} for k, t in zip("ABC", texts)]
    files = [rows_] if num_shards == 1 else [[row] for row in rows_]  # 3 shards: one document each
    kept, pairs = _dedup(tmp_path, files, "--num-perm", str(num_perm), "--threshold", str(threshold))
    assert kept == {"A", "C"}
    assert len(pairs) == 1 and pairs[0]["method"] == "minhash"
    assert pairs[0]["jaccard"] == pytest.approx(float(jaccard_estimate(sig[0], sig[1])), abs=1e-4)


def _greedy_reference(n: int, edges: set[tuple[int, int]]) -> dict[int, int]:
    kept, removed = set(), {}
    for d in range(n):
        nb = sorted(u for u, v in edges if v == d and u in kept)
        if nb:
            removed[d] = nb[0]
        else:
            kept.add(d)
    return removed


@pytest.mark.parametrize("seed", range(6))
def test_greedy_removal_matches_an_ordered_walk(seed):
    r = random.Random(seed)
    n = 300
    edges = {tuple(sorted(r.sample(range(n), 2))) for _ in range(r.choice([50, 400, 1500]))}
    if seed == 0:  # one long chain 0-1-2-...: deeper than the vectorised levels, finished in order
        edges = {(i, i + 1) for i in range(120)}
    u = np.array([e[0] for e in edges], np.int64)
    v = np.array([e[1] for e in edges], np.int64)
    removed, partner = greedy_removal(u, v)
    assert dict(zip(removed.tolist(), partner.tolist())) == _greedy_reference(n, edges)
    if seed == 0:
        assert removed.tolist() == list(range(1, 121, 2))
