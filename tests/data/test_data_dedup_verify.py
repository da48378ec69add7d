"""MinHash dedup verifies LSH candidates by estimated Jaccard and removes greedily against kept documents;
`--no-verify` removes unverified band-match clusters but their smallest document (datatrove semantics)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from data_helpers import read_jsonl, run_cli, write_jsonl
from llmctl.data.dedup import cluster_removal, greedy_removal
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


def _false_positive_texts() -> list[str]:
    """[a, fp, near]: fp shares an LSH band with a (16 bands of 1 row) but is truly dissimilar; near is a's
    near duplicate (one word edited)."""
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
    return texts


_FP_OPTS = ("--num-perm", "16", "--bands", "16", "--rows", "1", "--threshold", "0.8")


def test_lsh_false_positive_is_not_removed(tmp_path):
    rows = [{"id": k, "text": t} for k, t in zip(("a", "fp", "near"), _false_positive_texts())]
    kept, pairs = _dedup(tmp_path, [rows], *_FP_OPTS)
    assert kept == {"a", "fp"}  # the candidate below threshold stays, the real near duplicate goes
    assert len(pairs) == 1 and pairs[0]["removed"].endswith(":2") and pairs[0]["kept"].endswith(":0")
    assert pairs[0]["jaccard"] >= 0.8 and pairs[0]["method"] == "minhash"


def test_no_verify_removes_the_false_positive_and_keeps_the_smallest(tmp_path):
    """--no-verify (datatrove semantics): the unverified band match goes too, both pointing at the cluster's
    smallest document; rerunning the same output without the flag reruns the join and keeps fp again."""
    texts = _false_positive_texts()
    # fp first: the cluster's smallest document is then fp, not a, and both others must point at it
    rows = [{"id": k, "text": t} for k, t in zip(("fp", "a", "near"), [texts[1], texts[0], texts[2]])]
    kept, pairs = _dedup(tmp_path, [rows], *_FP_OPTS, "--no-verify")
    assert kept == {"fp"}
    assert [(p["removed"][-2:], p["kept"][-2:], p["method"]) for p in pairs] == [
        (":1", ":0", "minhash"),
        (":2", ":0", "minhash"),
    ]
    assert pairs[0]["jaccard"] < 0.5  # the false positive is reported with its (low) estimate
    report = json.loads((tmp_path / "out" / "_report.json").read_text())
    assert report["join"]["verify"] is False and report["join"]["verified_pairs"] is None
    kept, pairs = _dedup(tmp_path, [rows], *_FP_OPTS)  # default again, same output dir
    assert kept == {"fp", "a"} and len(pairs) == 1 and pairs[0]["removed"].endswith(":2")


@pytest.mark.parametrize("method", ["--exact", "--minhash"])
@pytest.mark.parametrize("verify", [(), ("--no-verify",)])
def test_first_in_input_order_is_kept_for_any_shard_count(tmp_path, method, verify):
    """One file over 2 shards deals rows round-robin (0, 2 | 1, 3), so shard order is not input order: the
    copy at row 1 must be kept over the one at row 2, as with 1 shard."""
    w = _words(200, 3)
    dup = " ".join(w[:150])
    rows = [{"id": "r0", "text": " ".join(w[50:200]) + " x"}, {"id": "r1", "text": dup},
            {"id": "r2", "text": dup}, {"id": "r3", "text": " ".join(reversed(w))}]
    write_jsonl(tmp_path / "in" / "part-0.jsonl", rows)
    for n in (1, 2):
        out = tmp_path / f"out{n}"
        args = ["data", "dedup", "--input", tmp_path / "in", "--output", out, method, "--num-shards", str(n)]
        res = run_cli(args + list(verify))
        assert res.exit_code == 0, res.output
        kept = {row["id"] for f in sorted(out.glob("part-*.jsonl")) for row in read_jsonl(f)}
        pairs = read_jsonl(out / "_pairs.jsonl")
        assert kept == {"r0", "r1", "r3"}, n
        assert [(p["removed"][-2:], p["kept"][-2:]) for p in pairs] == [(":2", ":1")], n


@pytest.mark.parametrize("num_shards", [1, 3])
def test_no_verify_chain_is_one_cluster(tmp_path, num_shards):
    """A~B~C with A not~C: verified, C stays; --no-verify removes B and C (one cluster, A kept)."""
    w = _words(400, 2)
    texts = [" ".join(w[0:300]), " ".join(w[25:325]), " ".join(w[50:350])]
    rows_ = [{"id": k, "text": t} for k, t in zip("ABC", texts)]
    files = [rows_] if num_shards == 1 else [[row] for row in rows_]
    kept, pairs = _dedup(tmp_path, files, "--num-perm", "256", "--threshold", "0.78", "--no-verify")
    assert kept == {"A"}
    assert [p["kept"] for p in pairs] == [pairs[0]["kept"]] * 2 and pairs[0]["kept"].endswith(":0")


def _components_reference(edges: set[tuple[int, int]]) -> dict[int, int]:
    """Plain union-find; every node that is not its component's minimum -> that minimum."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in sorted(parent) if find(x) != x}


@pytest.mark.parametrize("seed", range(6))
def test_cluster_removal_keeps_each_clusters_smallest(seed):
    r = random.Random(seed)
    n = 300
    edges = {tuple(sorted(r.sample(range(n), 2))) for _ in range(r.choice([50, 200, 1500]))}
    if seed == 0:  # a long chain, and a cluster whose minimum is linked only through larger documents
        edges = {(i, i + 1) for i in range(120)} | {(205, 209), (202, 209), (200, 207), (207, 209)}
    u = np.array([e[0] for e in edges], np.int64)
    v = np.array([e[1] for e in edges], np.int64)
    removed, root = cluster_removal(u, v)
    assert removed.tolist() == sorted(removed.tolist())
    assert dict(zip(removed.tolist(), root.tolist())) == _components_reference(edges)
    if seed == 0:
        assert set(root.tolist()) == {0, 200} and removed.tolist()[-4:] == [202, 205, 207, 209]


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
