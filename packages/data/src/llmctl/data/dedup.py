"""Exact and MinHash-LSH near-duplicate removal that works across shards, in three phases.

1. signatures (per shard, parallel): for every document a normalised exact hash, a MinHash signature and its
   LSH band hashes, streamed to raw files in the work dir (bounded memory), plus the document's file/row;
2. join (once, global): sort all shards' values together. Exact: each group of equal normalised hashes keeps
   its first document (lowest shard, then position). MinHash: documents sharing an LSH band bucket are only
   *candidates*; each candidate pair is verified by its estimated Jaccard (the fraction of equal signature
   values, as datasketch's `MinHash.jaccard`), read from the memory-mapped signature files, and kept as an edge
   only if it is >= threshold. Removal over verified edges is greedy in document order: walk the documents in
   order and remove one if any earlier *kept* document is a verified neighbour. So LSH false positives are never
   removed, and in a chain A~B~C with A not similar to C, B goes and A and C both stay. (Exact copies go first,
   so an exact group's later members follow its first document.) Writes per-shard removal lists and the
   removed-pair report (`_pairs.jsonl`: removed, kept, method, similarity, jaccard = the MinHash estimate);
3. apply (per shard, parallel): re-read the shard and write every document not on its removal list.

`run_dedup` runs all three locally (`--workers` processes for 1 and 3); a cluster runs phase 1 and 3 as array
jobs with `--shard-index/--num-shards` and phase 2 once in between.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmctl.core.errors import UserError
from llmctl.core.io import atomic_file, atomic_path, write_json_atomic

from .hashing import stable_hash64
from .text import detect_langs
from .minhash import MinHasher, band_hashes, optimal_bands
from .pipeline import (
    Count,
    StageStats,
    check_shard,
    make_bar,
    nbytes,
    plan_shard,
    report_progress,
    run_shards,
    shard_tag,
)
from .readers import _open_text, expand_inputs, iter_documents, pick_text_key, read_jsonl, reader_for
from .writers import (
    finish_single_file,
    make_writer,
    output_format,
    parts_output,
    side_path,
    single_file_target,
)

BATCH_DOCS = 512
METHODS = {0: "exact", 1: "minhash"}
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


@dataclass(frozen=True)
class DedupParams:
    exact: bool = True
    minhash: bool = True
    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5
    bands: int = 0  # 0 = choose from threshold and num_perm
    rows: int = 0
    seed: int = 1

    def resolved(self) -> "DedupParams":
        if not (self.exact or self.minhash):
            raise UserError("dedup: enable --exact and/or --minhash")
        if not 0 < self.threshold <= 1:
            raise UserError(f"--threshold must be in (0, 1], got {self.threshold}")
        bands, rows = self.bands, self.rows
        if bands <= 0 and rows <= 0:
            bands, rows = optimal_bands(self.threshold, self.num_perm)
        elif bands <= 0:
            bands = self.num_perm // rows
        elif rows <= 0:
            rows = self.num_perm // bands
        if bands * rows > self.num_perm or bands < 1 or rows < 1:
            raise UserError(f"--bands {bands} x --rows {rows} must be at most --num-perm {self.num_perm}")
        return DedupParams(
            self.exact, self.minhash, self.threshold, self.num_perm, self.ngram, bands, rows, self.seed
        )


def normalized_hash(text: str) -> int:
    """Exact-duplicate key: NFKC, lower case, whitespace and punctuation removed, then a 64-bit hash."""
    return stable_hash64(_NON_WORD.sub("", unicodedata.normalize("NFKC", text).lower()))


LANG_CODES = {"other": 0, "zh": 1, "en": 2}
LANG_NAMES = {v: k for k, v in LANG_CODES.items()}


def _paths(work: Path, tag: str) -> dict[str, Path]:
    return {
        k: work / f"{k}-{tag}.{ext}"
        for k, ext in (
            ("sig", "u32"),
            ("bands", "u64"),
            ("exact", "u64"),
            ("loc", "i64"),
            ("lang", "u8"),
            ("size", "i64"),
            ("meta", "json"),
            ("removed", "npy"),
        )
    }


# ---- phase 1 ------------------------------------------------------------------------------------------------


def dedup_signatures(
    inputs: Sequence[str],
    work_dir: str | os.PathLike,
    params: DedupParams,
    text_key: str | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
    quiet: bool = False,
) -> dict[str, Any]:
    """Phase 1 for one shard: exact hashes, MinHash signatures and band hashes, streamed to `work_dir`."""
    check_shard(shard_index, num_shards)
    params = params.resolved()
    files = expand_inputs(inputs)
    plan = plan_shard(files, shard_index, num_shards)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    paths = _paths(work, shard_tag(shard_index, num_shards))
    paths["meta"].unlink(missing_ok=True)  # the meta file marks a complete shard; it is written last
    hasher = MinHasher(params.num_perm, params.ngram, params.seed)
    file_ids = {f: i for i, f in enumerate(plan.files)}
    stats = StageStats("dedup-signatures")
    bar = make_bar(quiet, desc=f"dedup signatures {shard_index}/{num_shards}", unit="docs")
    n = 0
    outs = {k: open(str(paths[k]) + ".tmp", "wb") for k in ("sig", "bands", "exact", "loc", "lang", "size")}
    try:
        batch: list = []

        def flush() -> None:
            nonlocal n
            texts = [d.text for d in batch]
            if params.minhash:
                sig = hasher.signatures(texts)
                outs["sig"].write(sig.tobytes())
                outs["bands"].write(band_hashes(sig, params.bands, params.rows).tobytes())
            if params.exact:
                outs["exact"].write(
                    np.fromiter((normalized_hash(t) for t in texts), np.uint64, len(texts)).tobytes()
                )
            loc = np.array([[file_ids[d.source], d.index] for d in batch], dtype=np.int64).reshape(-1, 2)
            outs["loc"].write(loc.tobytes())
            langs = [d.lang or guess for d, guess in zip(batch, detect_langs(texts))]
            outs["lang"].write(np.array([LANG_CODES.get(x, 0) for x in langs], np.uint8).tobytes())
            outs["size"].write(np.array([nbytes(t) for t in texts], np.int64).tobytes())
            n += len(batch)
            bar.update(len(batch))
            report_progress(len(batch))
            batch.clear()

        for doc in iter_documents(plan, text_key, stats):
            batch.append(doc)
            if len(batch) >= BATCH_DOCS:
                flush()
        if batch:
            flush()
        for k, f in outs.items():
            f.close()
            os.replace(str(paths[k]) + ".tmp", paths[k])
    except BaseException:
        for k, f in outs.items():
            f.close()
            Path(str(paths[k]) + ".tmp").unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    meta = {
        "shard": [shard_index, num_shards],
        "docs": n,
        "files": list(plan.files),
        "by_document": plan.by_document,
        "params": asdict(params),
        "skipped": stats.to_dict()["dropped"],
    }
    write_json_atomic(paths["meta"], meta)
    return meta


# ---- phase 2 ------------------------------------------------------------------------------------------------


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


def dedup_join(
    work_dir: str | os.PathLike, num_shards: int, pairs_path: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Phase 2: one global join over all shards' hashes; writes removal lists and the pair report."""
    work = Path(work_dir)
    pairs_path = Path(pairs_path) if pairs_path else work / "_pairs.jsonl"
    metas = []
    for i in range(num_shards):
        p = _paths(work, shard_tag(i, num_shards))["meta"]
        if not p.is_file():
            raise UserError(
                f"{p}: signatures of shard {i} of {num_shards} are missing; run the signatures phase "
                f"with --shard-index {i} --num-shards {num_shards} first"
            )
        metas.append(json.loads(p.read_text()))
    params = DedupParams(**metas[0]["params"])
    for m in metas[1:]:
        if m["params"] != metas[0]["params"]:
            raise UserError(
                f"{work}: shards were hashed with different dedup parameters; rerun the signatures phase"
            )
    counts = np.array([m["docs"] for m in metas], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1])
    tags = [shard_tag(i, num_shards) for i in range(num_shards)]

    def load(kind: str, dtype, width: int = 1):
        parts = []
        for tag, c in zip(tags, counts):
            p = _paths(work, tag)[kind]
            if c == 0:
                parts.append(np.zeros((0, width) if width > 1 else 0, dtype))
                continue
            a = np.memmap(p, dtype=dtype, mode="r")
            parts.append(a.reshape(int(c), width) if width > 1 else a)
        return parts

    # exact: every later member of a group of equal normalised hashes goes, pointing at the group's first
    exact_removed = np.zeros(total, dtype=bool)
    ex_u = ex_v = np.zeros(0, np.int64)
    if params.exact and total:
        ex_u, ex_v = _run_edges(np.concatenate(load("exact", np.uint64)))
        exact_removed[ex_v] = True
    sig_parts = load("sig", np.uint32, params.num_perm) if params.minhash and total else []
    # minhash: LSH candidates among the documents the exact pass kept, verified by estimated Jaccard
    mu = mv = np.zeros(0, np.int64)
    candidates = 0
    if params.minhash and total:
        band_parts = load("bands", np.uint64, params.bands)
        keys = []
        for j in range(params.bands):
            col = np.concatenate([np.asarray(b[:, j]) for b in band_parts])
            u, v = _bucket_pairs(col)
            ok = ~(exact_removed[u] | exact_removed[v])
            keys.append(np.unique(u[ok] * total + v[ok]))
        key = np.unique(np.concatenate(keys))
        candidates = len(key)
        cu, cv = key // total, key % total
        sims = np.empty(len(key))
        for lo in range(0, len(key), VERIFY_CHUNK):
            hi = lo + VERIFY_CHUNK
            sims[lo:hi] = (
                _gather(sig_parts, offsets, cu[lo:hi]) == _gather(sig_parts, offsets, cv[lo:hi])
            ).mean(axis=1)
        good = sims >= params.threshold
        mu, mv = cu[good], cv[good]
    near_removed, near_kept = greedy_removal(mu, mv)
    # an exact copy of a document removed as a near duplicate points at that document's kept neighbour
    kept_of = np.full(total, -1, np.int64)
    kept_of[near_removed] = near_kept
    ex_kept = np.where(kept_of[ex_u] >= 0, kept_of[ex_u], ex_u)
    removed = np.concatenate([ex_v, near_removed])
    kept = np.concatenate([ex_kept, near_kept])
    method = np.concatenate([np.zeros(len(ex_v), np.int64), np.ones(len(near_removed), np.int64)])
    order = np.argsort(removed, kind="stable")
    removed, kept, method = removed[order], kept[order], method[order]

    def shard_of(g: np.ndarray) -> np.ndarray:
        return np.searchsorted(offsets, g, side="right") - 1

    locs = load("loc", np.int64, 2)
    jacc = np.full(len(removed), np.nan)
    if params.minhash and len(removed):
        for lo in range(0, len(removed), VERIFY_CHUNK):
            hi = lo + VERIFY_CHUNK
            jacc[lo:hi] = (
                _gather(sig_parts, offsets, removed[lo:hi]) == _gather(sig_parts, offsets, kept[lo:hi])
            ).mean(axis=1)
    sims = np.where(method == 0, 1.0, jacc)
    names_removed, names_kept = (
        _locators(metas, locs, offsets, removed),
        _locators(metas, locs, offsets, kept),
    )
    with atomic_file(pairs_path) as f:
        rows = zip(names_removed, names_kept, method.tolist(), sims.tolist(), jacc.tolist())
        for r, k, m, sim, jac in rows:
            row = {"removed": r, "kept": k, "method": METHODS[m], "similarity": round(sim, 4)}
            row["jaccard"] = None if np.isnan(jac) else round(jac, 4)  # MinHash estimate (None: no --minhash)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    rshard = shard_of(removed)
    for i, tag in enumerate(tags):
        sel = rshard == i
        arr = np.stack([removed[sel] - offsets[i], method[sel]], axis=1).astype(np.int64).reshape(-1, 2)
        with atomic_path(_paths(work, tag)["removed"]) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr[np.argsort(arr[:, 0])])
    summary = {
        "docs": total,
        "clusters": int(len(np.unique(kept))),
        "removed": int(len(removed)),
        "removed_exact": int((method == 0).sum()),
        "removed_minhash": int((method == 1).sum()),
        "lsh_candidates": int(candidates),
        "verified_pairs": int(len(mu)),
        "params": asdict(params),
        "pairs": str(pairs_path),
    }
    write_json_atomic(work / "join.json", summary)
    return summary


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


# ---- phase 3 ------------------------------------------------------------------------------------------------


def dedup_apply(
    inputs: Sequence[str],
    output: str | os.PathLike,
    work_dir: str | os.PathLike,
    text_key: str | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
    out_format: str | None = None,
    max_file_mb: int = 1024,
    quiet: bool = False,
) -> dict[str, Any]:
    """Phase 3 for one shard: copy every document that is not on the shard's removal list."""
    check_shard(shard_index, num_shards)
    tag = shard_tag(shard_index, num_shards)
    paths = _paths(Path(work_dir), tag)
    if not paths["removed"].is_file():
        raise UserError(
            f"{paths['removed']}: no removal list for shard {shard_index}; run the join phase first"
        )
    meta = json.loads(paths["meta"].read_text())
    removed = np.load(paths["removed"])
    n_docs = int(meta["docs"])
    method = np.full(n_docs, -1, dtype=np.int8)  # -1 keep, else the METHODS code that removed it
    method[removed[:, 0]] = removed[:, 1]
    files = expand_inputs(inputs)
    plan = plan_shard(files, shard_index, num_shards)
    if list(plan.files) != meta["files"]:
        raise UserError(f"dedup apply: shard {shard_index}'s input files differ from the signatures phase")
    fmt = output_format(out_format, plan.files)
    stats = _apply_stats(paths, method)
    bar = make_bar(quiet, desc=f"dedup apply {shard_index}/{num_shards}", unit="docs")
    with make_writer(fmt, output, f"part-{shard_index:05d}", max_file_mb << 20) as writer:
        if fmt == "jsonl" and all(reader_for(f) is read_jsonl for f in plan.files):
            _copy_kept_lines(
                plan.files, np.fromfile(paths["loc"], np.int64).reshape(-1, 2), method, writer, bar
            )
        else:
            key, n = None, 0
            for doc in iter_documents(plan, text_key):
                key = key or pick_text_key(doc.row, text_key, doc.source)
                if n < n_docs and method[n] < 0:
                    writer.write(doc.to_row(key), nbytes(doc.text))
                n += 1
                bar.update(1)
                report_progress(1)
            if n != n_docs:
                raise UserError(
                    f"dedup apply: shard {shard_index} has {n} documents now but {n_docs} when hashed; "
                    "the input changed — rerun all phases"
                )
    bar.close()
    report = {"shard": [shard_index, num_shards], "stats": stats.to_dict(), "files": writer.files}
    write_json_atomic(Path(output) / f"_report-{tag}.json", report)
    return report


def _apply_stats(paths: dict[str, Path], method: np.ndarray) -> StageStats:
    """Kept/dropped docs and bytes per language, from the arrays the signatures phase stored."""
    stats = StageStats("dedup")
    n = len(method)
    langs = np.fromfile(paths["lang"], np.uint8) if n else np.zeros(0, np.uint8)
    sizes = np.fromfile(paths["size"], np.int64) if n else np.zeros(0, np.int64)
    for code in np.unique(method):
        sel = method == code
        for lang_code in np.unique(langs[sel]):
            both = sel & (langs == lang_code)
            lang, docs, size = LANG_NAMES[int(lang_code)], int(both.sum()), int(sizes[both].sum())
            if code < 0:
                stats.kept.add(size, lang, docs=docs)
            else:
                stats.dropped.setdefault(f"duplicate-{METHODS[int(code)]}", Count()).add(
                    size, lang, docs=docs
                )
    return stats


def _copy_kept_lines(files: Sequence[str], locs: np.ndarray, method: np.ndarray, writer, bar) -> None:
    """jsonl to jsonl: copy the kept documents' lines byte for byte (no JSON parsing or re-encoding)."""
    for file_idx, path in enumerate(files):
        mine = locs[:, 0] == file_idx
        rows = locs[mine, 1]
        keep = np.zeros(int(rows.max()) + 1 if len(rows) else 0, dtype=bool)
        keep[rows[method[mine] < 0]] = True
        row = -1
        with _open_text(path, binary=True) as f:
            for raw in f:
                if not raw.strip():
                    continue
                row += 1
                if row < len(keep) and keep[row]:
                    writer.write_raw(raw if raw.endswith(b"\n") else raw + b"\n")
        done = int(mine.sum())
        bar.update(done)
        report_progress(done)


def run_dedup(
    inputs: Sequence[str],
    output: str | os.PathLike,
    params: DedupParams,
    text_key: str | None = None,
    workers: int = 1,
    num_shards: int | None = None,
    work_dir: str | os.PathLike | None = None,
    out_format: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """All three phases locally; shards = workers unless given.

    `output` is a directory, or a single `.jsonl`/`.parquet` file (reports, pairs and the work dir then sit
    next to it as `_<name>.report.json`, `_<name>.pairs.jsonl`, `_<name>.dedup_work/`).
    """
    n = num_shards or max(1, workers)
    target, out_dir, out_format = parts_output(output, out_format)
    work = Path(work_dir) if work_dir else default_work_dir(output)
    pairs = side_path(target, "pairs.jsonl") if target else out_dir / "_pairs.jsonl"
    files = expand_inputs(inputs)
    params = params.resolved()
    run_shards(
        dedup_signatures,
        n,
        workers,
        {"inputs": files, "work_dir": work, "params": params, "text_key": text_key},
        desc="dedup signatures",
    )
    summary = dedup_join(work, n, pairs)
    reports = run_shards(
        dedup_apply,
        n,
        workers,
        {
            "inputs": files,
            "output": out_dir,
            "work_dir": work,
            "text_key": text_key,
            "out_format": out_format,
        },
        desc="dedup apply",
    )
    total = StageStats("dedup")
    for r in reports:
        total.merge(StageStats.from_dict(r["stats"]))
    report = {
        "join": summary,
        "stats": total.to_dict(),
        "files": [f for r in reports for f in r["files"]],
        "summary": total.summary(),
    }
    if target:
        finish_single_file(report, target, out_dir)
    else:
        write_json_atomic(out_dir / "_report.json", report)
    return report


def default_work_dir(output: str | os.PathLike) -> Path:
    target = single_file_target(output)
    return side_path(target, "dedup_work") if target else Path(output) / "_dedup_work"
