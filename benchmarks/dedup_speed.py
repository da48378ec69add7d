"""Near-duplicate detection speed: llmctl's numpy MinHash-LSH against datasketch's MinHash + MinHashLSH on the
same documents and parameters (threshold 0.8, 128 permutations, 5-gram shingles), measured in one run.

    python benchmarks/dedup_speed.py                 # 20k documents (English + Chinese, with planted near dups)
    python benchmarks/dedup_speed.py --docs 100000
    python benchmarks/dedup_speed.py --peers --shards 2   # datatrove's pipeline, llmctl local and ray executors,
                                                          # llmctl --no-verify; exact-Jaccard ground truth

The documents are windows of the fixture texts (tinyshakespeare, chinese-poetry), so overlapping windows are
real near duplicates. datasketch gets its fastest path (`update_batch`, default scheme) and the usual
query-then-insert loop, with each LSH candidate verified by `MinHash.jaccard >= threshold` (a document is a
duplicate if an earlier *kept* one is a verified neighbour: the rule llmctl's join applies; `--no-verify` drops
the check, as plain MinHashLSH use does); llmctl runs the whole `llmctl data dedup --minhash` stage in-process
(read jsonl, signatures, global band join with verification, write the kept documents). Both shingle with the same tokens
(lower-cased words, single CJK characters; datatrove's signature step is given llmctl's shingles, and is also run
once with its own spacy words for reference), so the sets of removed
documents should nearly agree; their overlap is printed. `--peers` also runs llmctl with `--no-verify` (band
matches removed by clusters, datatrove's rule), overlaps over seeds 1-3 of each, and precision/recall of every
removed set against exact shingle Jaccard found by brute force (scipy sparse product of the shingle incidence
matrix). This is a benchmark, not a test: nothing asserts speed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "data"), str(REPO / "tests")]
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+")


def make_docs(n: int, seed: int = 0) -> list[str]:
    """Windows of the fixture texts: 70% English (40-300 words), 30% Chinese (60-400 characters)."""
    from data_helpers import TEXT_CORPUS, fixture_texts

    words = (TEXT_CORPUS / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split()
    zh = "".join(t for t in fixture_texts(max_chinese_lines=100_000) if re.match(r"[\u4e00-\u9fff]", t))
    r = random.Random(seed)
    docs = []
    for _ in range(n):
        if r.random() < 0.7:
            i, k = r.randrange(len(words) - 400), r.randint(40, 300)
            docs.append(" ".join(words[i : i + k]))
        else:
            i, k = r.randrange(len(zh) - 500), r.randint(60, 400)
            docs.append(zh[i : i + k])
    return docs


def shingles(text: str, n: int = 5) -> set[bytes]:
    toks = _TOKEN.findall(text.lower())
    return {" ".join(toks[i : i + n]).encode() for i in range(max(1, len(toks) - n + 1))}


def run_datasketch(
    docs: list[str], threshold: float, num_perm: int, verify: bool = True
) -> tuple[float, set[int]]:
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[int, MinHash] = {}
    removed = set()
    for i, doc in enumerate(docs):
        m = MinHash(num_perm=num_perm)
        m.update_batch(list(shingles(doc)))
        cands = lsh.query(m)
        if any(kept[j].jaccard(m) >= threshold for j in cands) if verify else cands:
            removed.add(i)
        else:
            lsh.insert(i, m)
            kept[i] = m
    return time.perf_counter() - t0, removed


def run_llmctl(docs: list[str], threshold: float, num_perm: int, work: Path) -> tuple[float, set[int]]:
    from llmctl.data.dedup import DedupParams, run_dedup

    corpus = work / "in.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, "text": d}, ensure_ascii=False) + "\n")
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run_dedup(
        [str(corpus)],
        out,
        DedupParams(exact=False, minhash=True, threshold=threshold, num_perm=num_perm),
        workers=1,
        quiet=True,
    )
    elapsed = time.perf_counter() - t0
    kept = {json.loads(line)["id"] for p in out.glob("part-*.jsonl") for line in open(p, encoding="utf-8")}
    return elapsed, set(range(len(docs))) - kept


def _write_corpus(docs: list[str], work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "in.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": str(i), "text": d}, ensure_ascii=False) + "\n")
    return corpus


def run_datatrove(docs: list[str], bands: int, rows: int, seed: int, work: Path, tasks: int,
                  same_shingles: bool = True) -> tuple[float, set[int]]:
    """datatrove's MinHash pipeline (signatures, buckets, clusters, filter) on LocalPipelineExecutor, with the
    same 5-gram shingles, bands x rows permutations and bands as llmctl; kept ids read from its output."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    shutil.rmtree(work, ignore_errors=True)
    corpus = _write_corpus(docs, work / "in")
    from datatrove.utils.hashing import HashConfig

    class SameShingles(MinhashDedupSignature):
        """datatrove's signatures over llmctl's shingles (lower-cased words and single CJK characters, 5 at a
        time) instead of its spacy word tokenizer on simplified text, so both sides hash the same sets."""

        def get_shingles(self, text):
            import numpy as np

            toks = _TOKEN.findall(text.lower())
            grams = [" ".join(toks[i : i + 5]) for i in range(max(1, len(toks) - 4))]
            return np.fromiter((self._hash_func(g) for g in grams), dtype=np.uint64).reshape((-1, 1))

    signature = SameShingles if same_shingles else MinhashDedupSignature

    # sha1 shingle hashes: datatrove's xxhash path passes str, which current xxhash wheels refuse
    cfg = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows, seed=seed,
                        hash_config=HashConfig(hash_fc="sha1", precision=64))
    quiet = dict(logging_dir=None, skip_completed=False)

    def reader():
        return JsonlReader(str(corpus.parent), id_key="id")

    t0 = time.perf_counter()
    LocalPipelineExecutor(
        [reader(), signature(str(work / "sigs"), config=cfg)], tasks=tasks, workers=tasks, **quiet
    ).run()
    LocalPipelineExecutor(
        [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)], tasks=bands, workers=tasks, **quiet
    ).run()
    LocalPipelineExecutor([MinhashDedupCluster(str(work / "buckets"), str(work / "ids"), config=cfg)], tasks=1, **quiet).run()
    LocalPipelineExecutor(
        [reader(), MinhashDedupFilter(str(work / "ids")), JsonlWriter(str(work / "out"), compression=None)],
        tasks=tasks, workers=tasks, **quiet,
    ).run()
    elapsed = time.perf_counter() - t0
    kept = {int(json.loads(line)["id"]) for p in (work / "out").glob("*.jsonl") for line in open(p, encoding="utf-8")}
    return elapsed, set(range(len(docs))) - kept


def run_llmctl_executor(docs: list[str], threshold: float, num_perm: int, bands: int, rows: int, work: Path,
                        executor: str, shards: int, verify: bool = True, seed: int = 1) -> tuple[float, set[int]]:
    """The whole `llmctl data dedup --minhash [--no-verify]` on an executor by name ('local' or 'ray')."""
    from llmctl.data.dedup import DedupParams, run_dedup
    from llmctl.data.executors import get_executor

    shutil.rmtree(work, ignore_errors=True)
    corpus = _write_corpus(docs, work)
    ex = get_executor(executor, workers=shards)
    t0 = time.perf_counter()
    run_dedup([str(corpus)], work / "out", DedupParams(False, True, threshold, num_perm, 5, bands, rows, seed, verify),
              num_shards=shards, executor=ex, quiet=True)
    elapsed = time.perf_counter() - t0
    kept = {int(json.loads(line)["id"]) for p in (work / "out").glob("part-*.jsonl") for line in open(p, encoding="utf-8")}
    return elapsed, set(range(len(docs))) - kept


def _overlap(a: set[int], b: set[int]) -> float:
    return len(a & b) / (len(a | b) or 1)


def true_pairs(docs: list[str], threshold: float):
    """Ground truth by brute force: every pair (i < j) whose exact shingle-set Jaccard is >= threshold (sparse
    doc x shingle incidence matrix, intersections from its product with itself)."""
    import numpy as np
    from scipy import sparse

    vocab: dict[bytes, int] = {}
    cols, ptr = [], [0]
    for d in docs:
        ids = {vocab.setdefault(g, len(vocab)) for g in shingles(d)}
        cols.extend(ids)
        ptr.append(len(cols))
    x = sparse.csr_matrix((np.ones(len(cols), np.int32), np.array(cols), np.array(ptr)), (len(docs), len(vocab)))
    inter = sparse.triu(x @ x.T, k=1).tocoo()
    size = np.diff(ptr)
    jac = inter.data / (size[inter.row] + size[inter.col] - inter.data)
    good = jac >= threshold
    return inter.row[good].astype(np.int64), inter.col[good].astype(np.int64)


def quality(removed: set[int], truth: set[int], tu, tv, n: int) -> str:
    """Precision/recall of a removed set against the exact-Jaccard one, and two rule-free counts: removals with
    no true near duplicate at all, and true pairs left with both documents kept."""
    import numpy as np

    hit = len(removed & truth)
    has_true = set(tu.tolist()) | set(tv.tolist())
    rm = np.zeros(n, bool)
    rm[list(removed)] = True
    both_kept = int((~rm[tu] & ~rm[tv]).sum())
    return (f"P {hit / (len(removed) or 1):.3f}  R {hit / (len(truth) or 1):.3f}  "
            f"removed without a true near dup {len(removed - has_true):>4}  true pairs both kept {both_kept:>4}")


def main_peers(args, docs: list[str], work: Path) -> None:
    """datatrove's pipeline and llmctl (verified, unverified clusters, local and ray executors), one machine,
    same shingles, bands and rows; removed-set overlaps across methods and seeds; exact-Jaccard ground truth."""
    from itertools import combinations

    from llmctl.data.dedup import cluster_removal, greedy_removal
    from llmctl.data.dedup.minhash import optimal_bands

    bands, rows = optimal_bands(args.threshold, args.num_perm)
    shards = max(1, min(os.cpu_count() or 1, args.shards))
    print(f"peers: {len(docs):,} docs, {bands} bands x {rows} rows, {shards} tasks/shards each")
    seeds = (1, 2, 3)
    dt = {}
    t_dt = None
    for s_ in seeds:
        t, dt[s_] = run_datatrove(docs, bands, rows, s_, work / f"dt{s_}", shards)
        t_dt = t if t_dt is None else t_dt
    t_sp, rm_sp = run_datatrove(docs, bands, rows, 1, work / "dtsp", shards, same_shingles=False)
    def ll(name: str, ex: str, verify: bool, seed: int) -> tuple[float, set[int]]:
        return run_llmctl_executor(docs, args.threshold, args.num_perm, bands, rows, work / name, ex, shards,
                                   verify, seed)

    t_lo, rm_lo = ll("lo", "local", True, 1)
    t_nv, rm_nv = ll("nv", "local", False, 1)
    t_ray, rm_ray = ll("ray", "ray", True, 1)
    lo = {1: rm_lo, **{s_: ll(f"lo{s_}", "local", True, s_)[1] for s_ in seeds[1:]}}
    nv = {1: rm_nv, **{s_: ll(f"nv{s_}", "local", False, s_)[1] for s_ in seeds[1:]}}
    n = len(docs)
    print(f"datatrove MinHash pipeline:     {n / t_dt:>8,.0f} docs/s ({len(dt[1])} removed)")
    print(f"llmctl local (verified):        {n / t_lo:>8,.0f} docs/s ({len(rm_lo)} removed), {t_dt / t_lo:.1f}x datatrove")
    print(f"llmctl local --no-verify:       {n / t_nv:>8,.0f} docs/s ({len(rm_nv)} removed), {t_dt / t_nv:.1f}x datatrove")
    print(f"llmctl ray (verified):          {n / t_ray:>8,.0f} docs/s ({len(rm_ray)} removed), {t_dt / t_ray:.1f}x datatrove")
    print(f"datatrove, its own spacy words: {n / t_sp:>8,.0f} docs/s ({len(rm_sp)} removed); "
          f"overlap with llmctl {_overlap(rm_lo, rm_sp):.3f}, with datatrove on llmctl shingles {_overlap(dt[1], rm_sp):.3f}")

    def cross(a: dict, b: dict) -> str:  # mean (min-max) overlap over seed pairs, a's seed != b's unless a is b
        vals = [_overlap(a[i], b[j]) for i, j in (combinations(seeds, 2) if a is b else
                                                  ((i, j) for i in seeds for j in seeds))]
        return f"{sum(vals) / len(vals):.3f} ({min(vals):.3f}-{max(vals):.3f}, {len(vals)} pairs)"

    print("removed-set overlap (Jaccard of the removed sets), same shingles, seeds 1-3:")
    print(f"  datatrove vs datatrove (seed pairs):   {cross(dt, dt)}")
    print(f"  llmctl --no-verify vs datatrove:       {cross(nv, dt)}")
    print(f"  llmctl verified vs datatrove:          {cross(lo, dt)}")
    print(f"  llmctl --no-verify vs itself (seeds):  {cross(nv, nv)}")
    print(f"  llmctl verified vs itself (seeds):     {cross(lo, lo)}")
    print(f"  llmctl local vs ray (seed 1):          {_overlap(rm_lo, rm_ray):.3f}")
    print(f"  seed-1 sizes: datatrove {[len(dt[s_]) for s_ in seeds]}, --no-verify {[len(nv[s_]) for s_ in seeds]}, "
          f"verified {[len(lo[s_]) for s_ in seeds]}")
    t0 = time.perf_counter()
    tu, tv = true_pairs(docs, args.threshold)
    g_greedy = set(greedy_removal(tu, tv)[0].tolist())
    g_cluster = set(cluster_removal(tu, tv)[0].tolist())
    print(f"exact ground truth ({time.perf_counter() - t0:.1f} s brute force): {len(tu)} pairs with shingle Jaccard "
          f">= {args.threshold}; removed by the verified rule on them {len(g_greedy)}, by clusters {len(g_cluster)}")
    print("  vs the exact greedy set (P = precision, R = recall), seed 1; then the same vs the exact clusters:")
    for name, r in (("datatrove", dt[1]), ("llmctl --no-verify", nv[1]), ("llmctl verified", lo[1]),
                    ("datatrove spacy words", rm_sp)):
        print(f"  {name:<22} {quality(r, g_greedy, tu, tv, n)}")
    for name, r in (("datatrove", dt[1]), ("llmctl --no-verify", nv[1]), ("llmctl verified", lo[1])):
        print(f"  {name:<22} vs exact clusters: {quality(r, g_cluster, tu, tv, n)}")
    for name, runs in (("datatrove", dt), ("llmctl --no-verify", nv), ("llmctl verified", lo)):
        ov = [_overlap(runs[s_], g_greedy) for s_ in seeds]
        print(f"  {name:<22} overlap with the exact greedy set, seeds 1-3: {' '.join(f'{x:.3f}' for x in ov)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument(
        "--repeats", type=int, default=2, help="Interleaved repeats; the best time of each is kept."
    )
    ap.add_argument(
        "--no-verify", action="store_true", help="datasketch removes on any LSH candidate (no Jaccard check)."
    )
    ap.add_argument("--peers", action="store_true", help="Only the datatrove / llmctl-local / llmctl-ray peers.")
    ap.add_argument("--shards", type=int, default=2, help="Tasks (datatrove) and shards (llmctl) for --peers.")
    args = ap.parse_args()
    os.environ.setdefault("LLMCTL_PROGRESS", "0")
    docs = make_docs(args.docs)
    work = Path(tempfile.mkdtemp(prefix="llmctl_dedupbench_"))
    if args.peers:
        main_peers(args, docs, work)
        return
    print(
        f"{len(docs):,} documents ({sum(len(d) for d in docs) / 2**20:.1f} M chars), threshold {args.threshold}, "
        f"{args.num_perm} permutations, 5-gram shingles; cores: {os.cpu_count()}"
    )
    best = {"datasketch": float("inf"), "llmctl": float("inf")}
    for r in range(args.repeats):  # interleaved so machine noise hits both alike
        t_ds, removed_ds = run_datasketch(docs, args.threshold, args.num_perm, not args.no_verify)
        t_ll, removed_ll = run_llmctl(docs, args.threshold, args.num_perm, work)
        best["datasketch"] = min(best["datasketch"], t_ds)
        best["llmctl"] = min(best["llmctl"], t_ll)
        print(
            f"  run {r}: datasketch {t_ds:.2f} s ({len(removed_ds)} removed), llmctl {t_ll:.2f} s "
            f"({len(removed_ll)} removed)"
        )
    both = len(removed_ds & removed_ll)
    union = len(removed_ds | removed_ll) or 1
    print(f"datasketch MinHash+MinHashLSH: {len(docs) / best['datasketch']:>10,.0f} docs/s")
    print(
        f"llmctl data dedup --minhash:   {len(docs) / best['llmctl']:>10,.0f} docs/s (incl. reading and writing jsonl)"
    )
    print(f"speed-up llmctl / datasketch:  {best['datasketch'] / best['llmctl']:.1f}x (target >= 5x)")
    print(
        f"removed-set agreement (Jaccard of the two removed sets): {both / union:.3f} "
        f"({both} common, {len(removed_ds - removed_ll)} only datasketch, {len(removed_ll - removed_ds)} only llmctl)"
    )
    print(
        "  (both remove a document only if an earlier kept one has estimated Jaccard >= threshold; the two hash\n"
        "   shingles differently, so pairs near the threshold fall on either side by chance)"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
