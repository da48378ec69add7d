"""Dedup phase 2, once over all shards: the exact and LSH band joins, in bounded memory, then removal lists.

Exact: each group of equal normalised hashes keeps its first document in input order. MinHash:
documents sharing an LSH band bucket are only *candidates*; each candidate pair is verified by its estimated
Jaccard (the fraction of equal signature values, as datasketch's `MinHash.jaccard`), read from the
memory-mapped signature files, and kept as an edge only if it is >= threshold. Removal over verified edges is
greedy in input order (file, row: the same for any shard count): a document goes if an earlier *kept*
document is a verified neighbour, so LSH false positives are never removed, and in a chain A~B~C with A not
similar to C, B goes and A and C both stay. With `verify=False` (`--no-verify`) there is no check: every
candidate pair is an edge, and each connected cluster keeps only its first document in input order
(datatrove's and NeMo-Curator's rule: faster, more false positives, and in A~B~C both B and C go).

Memory: one band column at a time is read from its spilled file, and split into hash partitions (by the top
bits of the band value) small enough for `memory_bytes`; a bucket never straddles partitions, so the
candidates are the same whatever the partition count. Writes per-shard removal lists and `_pairs.jsonl`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.core.errors import UserError
from llmctl.core.io import atomic_file, atomic_path, write_json_atomic

from ..executors import ShardDocuments, ShardStage
from ..pipeline import shard_tag
from .params import METHODS, DedupParams, band_path, work_paths

JOIN_MEMORY_BYTES = 1 << 30  # what one partition of a band column may take (values, ids and sort order)
BYTES_PER_ENTRY = 40

# in an LSH bucket of more documents, each is checked against the bucket's first and its BUCKET_CAP predecessors
BUCKET_CAP = 128
VERIFY_CHUNK = 1 << 16  # candidate pairs whose signatures are read at once


def _run_edges(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (first, other) linking every run of equal values (by global position order)."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    same = v[1:] == v[:-1]
    if not same.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    run_start = np.concatenate([[True], ~same])
    run_id = np.cumsum(run_start) - 1
    first = order[run_start][run_id]
    keep = ~run_start
    return first[keep].astype(np.int64), order[keep].astype(np.int64)


def _bucket_pairs(values: np.ndarray, cap: int = BUCKET_CAP) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (earlier, later) of documents with equal `values` (one LSH band).

    Every pair in a bucket of up to `cap + 1` documents; in a bigger one each document is paired with the
    `cap` documents before it and with the bucket's first, which bounds the work on degenerate buckets.
    """
    n = len(values)
    order = np.argsort(values, kind="stable")  # stable: ascending document number within a bucket
    v = values[order]
    same = v[1:] == v[:-1]
    if not same.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], ~same]))
    lens = np.diff(np.concatenate([starts, [n]]))
    pos = np.arange(n)
    first = np.repeat(starts, lens)
    rem = first + np.repeat(lens, lens) - pos - 1  # bucket members after each position
    us, vs = [], []
    p = np.flatnonzero(rem >= 1)
    d = 1
    while len(p) and d <= cap:
        us.append(order[p])
        vs.append(order[p + d])
        d += 1
        p = p[rem[p] >= d]
    far = np.flatnonzero(pos - first > cap)
    if len(far):
        us.append(order[first[far]])
        vs.append(order[far])
    return np.concatenate(us).astype(np.int64), np.concatenate(vs).astype(np.int64)


def greedy_removal(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walk the documents in order; remove one if an earlier *kept* document is a neighbour.

    `u < v` are the (verified) edges. Returns (removed documents, ascending; for each, its earliest kept
    neighbour). Resolved a dependency level at a time in numpy; long chains finish in a plain ordered pass.
    """
    if len(u) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nodes = np.unique(np.concatenate([u, v]))  # work on documents with an edge: memory follows duplicates
    u, v, n = np.searchsorted(nodes, u), np.searchsorted(nodes, v), len(nodes)
    state = np.ones(n, np.int8)  # 0 undecided, 1 kept, 2 removed; only documents with an earlier neighbour
    targets = np.unique(v)  # can go
    state[targets] = 0
    for _ in range(32):
        open_ = state[v] == 0
        if not open_.any():
            break
        src = state[u[open_]]
        tv = v[open_]
        kept_src = np.bincount(tv[src == 1], minlength=n) > 0
        undecided_src = np.bincount(tv[src == 0], minlength=n) > 0
        undecided = state == 0
        state[undecided & kept_src] = 2
        state[undecided & ~kept_src & ~undecided_src] = 1
    rest = targets[state[targets] == 0]
    if len(rest):  # long chains: finish in order (a document's undecided sources come before it)
        order = np.argsort(v, kind="stable")
        su, sv = u[order], v[order]
        bounds = np.searchsorted(sv, rest)
        ends = np.searchsorted(sv, rest, side="right")
        for t, lo, hi in zip(rest.tolist(), bounds.tolist(), ends.tolist()):
            state[t] = 2 if (state[su[lo:hi]] == 1).any() else 1
    removed = np.flatnonzero(state == 2)
    partner = np.full(n, np.iinfo(np.int64).max, np.int64)
    sel = (state[u] == 1) & (state[v] == 2)
    np.minimum.at(partner, v[sel], u[sel])
    return nodes[removed].astype(np.int64), nodes[partner[removed]].astype(np.int64)


def cluster_removal(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected clusters of the (unverified) edges `u`-`v`: every document but the smallest of its cluster goes.

    Returns (removed documents, ascending; for each, its cluster's smallest document). Union-find in numpy:
    each pass hooks every root to the smallest root it shares an edge with, then compresses paths, so a
    parent is never larger than its child and the one root left per cluster is the cluster's minimum.
    """
    if len(u) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nodes = np.unique(np.concatenate([u, v]))
    u, v = np.searchsorted(nodes, u), np.searchsorted(nodes, v)
    parent = np.arange(len(nodes))
    while True:
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(pu, pv)[differ], np.minimum(pu, pv)[differ])
        while True:  # path compression: every node points at its root
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up
    removed = np.flatnonzero(parent != np.arange(len(nodes)))
    return nodes[removed].astype(np.int64), nodes[parent[removed]].astype(np.int64)


def _partitioned(columns: list[np.ndarray], offsets: np.ndarray, parts: int):
    """Yield (values, global ids) of one hash partition at a time, ids ascending within each partition."""
    shift = np.uint64(64 - max(1, int(np.ceil(np.log2(parts))))) if parts > 1 else None
    for p in range(parts):
        vals, ids = [], []
        for s, col in enumerate(columns):
            for lo in range(0, len(col), 1 << 22):
                block = np.asarray(col[lo : lo + (1 << 22)])
                if shift is None:
                    sel = np.arange(len(block))
                else:
                    sel = np.flatnonzero((block >> shift) % np.uint64(parts) == np.uint64(p))
                vals.append(block[sel])
                ids.append(sel + lo + offsets[s])
        if vals:
            yield np.concatenate(vals), np.concatenate(ids).astype(np.int64)


def _join_column(columns, offsets, parts, pairs_fn):
    """All (earlier, later) pairs `pairs_fn` finds in a column, partition by partition, as global ids."""
    us, vs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for values, ids in _partitioned(columns, offsets, parts):
        u, v = pairs_fn(values)
        us.append(ids[u])
        vs.append(ids[v])
    return np.concatenate(us), np.concatenate(vs)


def load_metas(work: Path, num_shards: int) -> list[dict[str, Any]]:
    metas = []
    for i in range(num_shards):
        p = work_paths(work, shard_tag(i, num_shards))["meta"]
        if not p.is_file():
            raise UserError(
                f"{p}: signatures of shard {i} of {num_shards} are missing; run the signatures phase "
                f"with --shard-index {i} --num-shards {num_shards} first"
            )
        metas.append(json.loads(p.read_text()))
    for m in metas[1:]:
        if m["params"] != metas[0]["params"]:
            raise UserError(
                f"{work}: shards were hashed with different dedup parameters; rerun the signatures phase"
            )
    return metas


def dedup_join(
    work_dir: str | os.PathLike,
    num_shards: int,
    pairs_path: str | os.PathLike | None = None,
    memory_bytes: int = JOIN_MEMORY_BYTES,
    verify: bool = True,
) -> dict[str, Any]:
    """Phase 2: one global join over all shards' hashes; writes removal lists and the pair report.

    `verify=False`: LSH candidates are not checked by estimated Jaccard; connected clusters of them keep
    their smallest document (`cluster_removal`) instead of the greedy walk over verified edges.
    """
    work = Path(work_dir)
    pairs_path = Path(pairs_path) if pairs_path else work / "_pairs.jsonl"
    metas = load_metas(work, num_shards)
    params = replace(DedupParams(**metas[0]["params"]), verify=verify)
    counts = np.array([m["docs"] for m in metas], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1])
    tags = [shard_tag(i, num_shards) for i in range(num_shards)]
    parts = max(1, int(np.ceil(total * BYTES_PER_ENTRY / max(1, memory_bytes))))

    def load(path_of, dtype, width: int = 1):
        out = []
        for tag, c in zip(tags, counts):
            if c == 0:
                out.append(np.zeros((0, width) if width > 1 else 0, dtype))
                continue
            a = np.memmap(path_of(tag), dtype=dtype, mode="r")
            out.append(a.reshape(int(c), width) if width > 1 else a)
        return out

    in_order = _InputOrder(metas, load(lambda t: work_paths(work, t)["loc"], np.int64, 2), offsets)
    # exact: every later member of a group of equal normalised hashes goes, pointing at the group's first
    exact_removed = np.zeros(total, dtype=bool)
    ex_u = ex_v = np.zeros(0, np.int64)
    if params.exact and total:
        ex_u, ex_v = _join_column(load(lambda t: work_paths(work, t)["exact"], np.uint64), offsets, parts, _run_edges)
        ex_u, ex_v = in_order.first_of_groups(ex_u, ex_v)
        order = np.argsort(ex_v, kind="stable")
        ex_u, ex_v = ex_u[order], ex_v[order]
        exact_removed[ex_v] = True
    sig_parts = load(lambda t: work_paths(work, t)["sig"], np.uint32, params.num_perm) if params.minhash and total else []
    # minhash: LSH candidates among the documents the exact pass kept, verified by estimated Jaccard
    mu = mv = np.zeros(0, np.int64)
    candidates = 0
    if params.minhash and total:
        keys = []
        for j in range(params.bands):
            cols = load(lambda t, j=j: band_path(work, t, j), np.uint64)
            u, v = _join_column(cols, offsets, parts, _bucket_pairs)
            ok = ~(exact_removed[u] | exact_removed[v])
            keys.append(np.unique(u[ok] * total + v[ok]))
        key = np.unique(np.concatenate(keys))
        candidates = len(key)
        cu, cv = key // total, key % total
        if verify:
            good = _similarity(sig_parts, offsets, cu, cv) >= params.threshold
            mu, mv = cu[good], cv[good]
        else:
            mu, mv = cu, cv
    near_removed, near_kept = in_order.removal(greedy_removal if verify else cluster_removal, mu, mv)
    # an exact copy of a document removed as a near duplicate points at that document's kept neighbour
    at = np.searchsorted(near_removed, ex_u)
    hit = at < len(near_removed)
    hit[hit] = near_removed[at[hit]] == ex_u[hit]
    ex_kept = ex_u.copy()
    ex_kept[hit] = near_kept[at[hit]]
    removed = np.concatenate([ex_v, near_removed])
    kept = np.concatenate([ex_kept, near_kept])
    method = np.concatenate([np.zeros(len(ex_v), np.int64), np.ones(len(near_removed), np.int64)])
    order = np.argsort(removed, kind="stable")
    removed, kept, method = removed[order], kept[order], method[order]
    jacc = _similarity(sig_parts, offsets, removed, kept) if params.minhash and len(removed) else np.full(
        len(removed), np.nan
    )
    _write_pairs(pairs_path, metas, load(lambda t: work_paths(work, t)["loc"], np.int64, 2), offsets,
                 removed, kept, method, jacc)
    rshard = np.searchsorted(offsets, removed, side="right") - 1
    for i, tag in enumerate(tags):
        sel = rshard == i
        arr = np.stack([removed[sel] - offsets[i], method[sel]], axis=1).astype(np.int64).reshape(-1, 2)
        with atomic_path(work_paths(work, tag)["removed"]) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr[np.argsort(arr[:, 0])])
    summary = {
        "docs": total,
        "clusters": int(len(np.unique(kept))),
        "removed": int(len(removed)),
        "removed_exact": int((method == 0).sum()),
        "removed_minhash": int((method == 1).sum()),
        "lsh_candidates": int(candidates),
        "verified_pairs": int(len(mu)) if verify else None,  # None: --no-verify, every candidate is an edge
        "verify": verify,
        "params": asdict(params),
        "pairs": str(pairs_path),
    }
    write_json_atomic(work / "join.json", summary)
    return summary


def _similarity(sig_parts, offsets, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of document pairs (a[i], b[i]), reading their signatures a block at a time."""
    out = np.empty(len(a))
    for lo in range(0, len(a), VERIFY_CHUNK):
        hi = lo + VERIFY_CHUNK
        out[lo:hi] = (_gather(sig_parts, offsets, a[lo:hi]) == _gather(sig_parts, offsets, b[lo:hi])).mean(axis=1)
    return out


def _write_pairs(path, metas, locs, offsets, removed, kept, method, jacc) -> None:
    sims = np.where(method == 0, 1.0, jacc)
    names_removed, names_kept = _locators(metas, locs, offsets, removed), _locators(metas, locs, offsets, kept)
    with atomic_file(path) as f:
        for r, k, m, sim, jac in zip(names_removed, names_kept, method.tolist(), sims.tolist(), jacc.tolist()):
            row = {"removed": r, "kept": k, "method": METHODS[m], "similarity": round(sim, 4)}
            row["jaccard"] = None if np.isnan(jac) else round(jac, 4)  # MinHash estimate (None: no --minhash)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


class JoinStage(ShardStage):
    """Phase 2 as a one-shard step, so an executor runs it where the shards ran (a Ray task on a cluster)."""

    name = "dedup-join"

    def __init__(
        self, work: Path, num_shards: int, pairs: Path, memory_bytes: int = JOIN_MEMORY_BYTES, verify: bool = True
    ):
        self.work, self.num_shards, self.pairs, self.memory_bytes = Path(work), num_shards, Path(pairs), memory_bytes
        self.verify = verify
        self.marker_dir = self.work / "_done"

    def fingerprint(self) -> dict[str, Any]:
        return {"num_shards": self.num_shards, "pairs": str(self.pairs), "verify": self.verify}

    def run(self, documents: ShardDocuments, shard: int, num_shards: int) -> dict[str, Any]:
        return dedup_join(self.work, self.num_shards, self.pairs, self.memory_bytes, self.verify)

    def merge(self, reports: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        return dict(reports[0])


class _InputOrder:
    """Document order for the removal rules: input order (file in sorted input order, then row), whatever the
    shard count. Global ids run shard by shard, and `plan_shard` deals files (file k to shard k mod n) or, with
    fewer files than shards, rows (row k to shard k mod n) round-robin, so id order is not input order. Keys
    are computed only for documents with an edge, so memory follows the duplicates.
    """

    def __init__(self, metas, locs, offsets):
        n = len(metas)
        self.locs, self.offsets = locs, offsets
        self.file_index = [  # each shard's file number -> the file's position among all inputs
            np.arange(len(m["files"]), dtype=np.int64) * (1 if m["by_document"] else n) + (0 if m["by_document"] else i)
            for i, m in enumerate(metas)
        ]

    def keys(self, g: np.ndarray) -> np.ndarray:
        """int64 keys of global documents `g`, ascending in input order (file << 40 | row)."""
        loc = _gather(self.locs, self.offsets, g) if len(g) else np.zeros((0, 2), np.int64)
        shard = np.searchsorted(self.offsets, g, side="right") - 1
        out = np.empty(len(g), np.int64)
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = (self.file_index[s][loc[sel, 0]] << 40) | loc[sel, 1]
        return out

    def first_of_groups(self, first: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Star edges (first, other) of groups re-pointed at each group's earliest member in input order."""
        if len(first) == 0:
            return first, other
        heads = np.unique(first)
        member = np.concatenate([heads, other])
        group = np.concatenate([heads, first])
        order = np.lexsort((self.keys(member), group))
        member, group = member[order], group[order]
        lead = np.concatenate([[True], group[1:] != group[:-1]])
        root = member[lead][np.cumsum(lead) - 1]
        return root[~lead], member[~lead]

    def removal(self, rule, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`rule` (greedy_removal or cluster_removal) over edges in input order; (removed, kept) as global
        ids, ascending by removed."""
        if len(u) == 0:
            return rule(u, v)
        nodes = np.unique(np.concatenate([u, v]))
        key = self.keys(nodes)
        ku, kv = key[np.searchsorted(nodes, u)], key[np.searchsorted(nodes, v)]
        removed_k, kept_k = rule(np.minimum(ku, kv), np.maximum(ku, kv))
        by_key = np.argsort(key)
        removed = nodes[by_key[np.searchsorted(key, removed_k, sorter=by_key)]]
        kept = nodes[by_key[np.searchsorted(key, kept_k, sorter=by_key)]]
        order = np.argsort(removed, kind="stable")
        return removed[order], kept[order]


def _gather(parts: list[np.ndarray], offsets: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Rows `g` (global document numbers) of per-shard memory-mapped arrays, reading only those rows."""
    shard = np.searchsorted(offsets, g, side="right") - 1
    out = np.empty((len(g), parts[0].shape[1]), dtype=parts[0].dtype)
    for s in np.unique(shard):
        sel = shard == s
        out[sel] = parts[s][g[sel] - offsets[s]]
    return out


def _locators(metas, locs, offsets, g: np.ndarray) -> list[str]:
    """'file:row' for global document numbers `g`."""
    shard = np.searchsorted(offsets, g, side="right") - 1
    out = []
    for s, local in zip(shard.tolist(), (g - offsets[shard]).tolist()):
        file_idx, row = (int(x) for x in locs[s][local])
        out.append(f"{metas[s]['files'][file_idx]}:{row}")
    return out


