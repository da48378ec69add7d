"""Tokenize a corpus into Megatron MMIDIDX `PREFIX_train` / `PREFIX_val` datasets, streaming and in parallel.

The parent frames raw records into chunks (`chunks.py`: jsonl lines are parsed by the workers, not here) and
hands them to worker processes running the fast `tokenizers` backend's `encode_batch`; at most a few chunks
are in flight, so memory stays flat whatever the corpus size. Results come back in order and are streamed to
two builders; a document goes to val when a hash of (file, row, seed) falls
under --val-ratio, so the split is reproducible and does not depend on workers or shards.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from llmctl.core.errors import UserError
from llmctl.core.io import write_json_atomic

from .hashing import uniform01, row_keys, stable_hash64
from .hf_tokenizer import TokenizerInfo, load_tokenizer_info
from .indexed import IndexedDatasetBuilder, dtype_for_vocab
from .pipeline import StageStats, check_shard, make_bar, mp_context, plan_shard, report_progress, shard_tag
from .chunks import Chunk, decode_chunk, iter_chunks
from .readers import expand_inputs

CHUNK_DOCS = 1024
CHUNK_CHARS = 2 << 20


@dataclass
class TokenizeResult:
    prefixes: dict[str, str]  # split -> output prefix
    report: dict[str, Any]


def resolve_dtype(dtype: str, vocab_size: int) -> type:
    if dtype == "auto":
        return dtype_for_vocab(vocab_size)
    if dtype == "uint16":
        if vocab_size > 65535:
            raise UserError(
                f"--dtype uint16 cannot hold this tokenizer's ids (vocab size {vocab_size} > 65535); "
                "use --dtype int32 or auto"
            )
        return np.uint16
    if dtype == "int32":
        return np.int32
    raise UserError(f"--dtype must be auto, uint16 or int32, got '{dtype}'")


# ---- worker side -------------------------------------------------------------------------------------------

_TOK = None


def _worker_init(tokenizer_json: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    global _TOK
    from tokenizers import Tokenizer

    _TOK = Tokenizer.from_str(tokenizer_json)


def encode_chunk(texts: list[str], eod: int | None, tok=None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of `texts` concatenated (EOD after each when `eod` is set) and the per-document lengths."""
    tok = tok or _TOK
    encs = tok.encode_batch(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs))
    if eod is None:
        flat = np.fromiter(
            itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int32, count=int(lengths.sum())
        )
        return flat, lengths
    flat = np.fromiter(
        itertools.chain.from_iterable(itertools.chain(e.ids, (eod,)) for e in encs),
        dtype=np.int32,
        count=int(lengths.sum()) + len(encs),
    )
    return flat, lengths + 1


def encode_raw_chunk(chunk: Chunk, eod: int | None, tok=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a raw chunk and encode its non-empty documents: (tokens, lengths, kept mask over the chunk)."""
    texts, kept = decode_chunk(chunk)
    flat, lengths = encode_chunk(texts, eod, tok) if texts else (np.zeros(0, np.int32), np.zeros(0, np.int64))
    return flat, lengths, kept


# ---- parent side -------------------------------------------------------------------------------------------


def _is_val(src: int, rows: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Val membership from a hash of (file, row, seed): independent of chunking, workers and shards."""
    if ratio <= 0:
        return np.zeros(len(rows), dtype=bool)
    keys = row_keys(0, np.asarray(rows), seed) ^ np.uint64(src)
    return uniform01(keys) < ratio


def _split_write(
    builders: dict[str, IndexedDatasetBuilder],
    flat: np.ndarray,
    lengths: np.ndarray,
    is_val: np.ndarray,
    counts: dict[str, list[int]],
) -> None:
    if "val" not in builders or not is_val.any():
        builders["train"].add_documents(flat, lengths)
        counts["train"][0] += len(lengths)
        counts["train"][1] += int(lengths.sum())
        return
    token_is_val = np.repeat(is_val, lengths)
    for split, mask, tmask in (("train", ~is_val, ~token_is_val), ("val", is_val, token_is_val)):
        if mask.any():
            builders[split].add_documents(flat[tmask], lengths[mask])
            counts[split][0] += int(mask.sum())
            counts[split][1] += int(lengths[mask].sum())


def output_prefixes(
    output_prefix: str, val_ratio: float, shard_index: int = 0, num_shards: int = 1
) -> dict[str, str]:
    base = output_prefix if num_shards == 1 else f"{output_prefix}-{shard_tag(shard_index, num_shards)}"
    out = {"train": f"{base}_train"}
    if val_ratio > 0:
        out["val"] = f"{base}_val"
    return out


def tokenize_corpus(
    inputs: Sequence[str],
    tokenizer: str,
    output_prefix: str,
    text_key: str | None = None,
    workers: int = 1,
    append_eod: bool = True,
    val_ratio: float = 0.01,
    seed: int = 1234,
    dtype: str = "auto",
    log_interval: int = 0,
    shard_index: int = 0,
    num_shards: int = 1,
    quiet: bool = False,
) -> TokenizeResult:
    """Tokenize shard `shard_index` of `num_shards` of `inputs` into `<prefix>_train` / `<prefix>_val`."""
    check_shard(shard_index, num_shards)
    if not 0 <= val_ratio < 1:
        raise UserError(f"--val-ratio must be in [0, 1), got {val_ratio}")
    info: TokenizerInfo = load_tokenizer_info(tokenizer)
    np_dtype = resolve_dtype(dtype, info.vocab_size)
    eod = None
    if append_eod:
        if info.eos_id is None:
            raise UserError(
                f"--tokenizer {tokenizer}: no EOS token found to append as EOD "
                "(set eos_token in tokenizer_config.json or pass --no-append-eod)"
            )
        eod = int(info.eos_id)

    files = expand_inputs(inputs)
    plan = plan_shard(files, shard_index, num_shards)
    root = os.path.commonpath([os.path.abspath(os.path.dirname(f)) for f in files])
    source_hash = {f: stable_hash64(os.path.relpath(os.path.abspath(f), root)) for f in plan.files}
    prefixes = output_prefixes(output_prefix, val_ratio, shard_index, num_shards)
    stats = StageStats("tokenize")
    counts = {s: [0, 0] for s in prefixes}
    builders = {s: IndexedDatasetBuilder(p, np_dtype) for s, p in prefixes.items()}
    t0 = time.perf_counter()
    pool = None
    bar = make_bar(quiet, desc="tokenize", unit="docs")
    try:
        chunks = iter_chunks(plan, text_key, CHUNK_DOCS, CHUNK_CHARS)
        docs_done = 0
        next_log = log_interval or 0

        def consume(chunk: Chunk, result) -> None:
            nonlocal docs_done, next_log
            flat, lengths, kept = result
            skipped = int((~kept).sum())
            for _ in range(skipped):
                stats.drop("empty", 0)
            is_val = _is_val(source_hash[chunk.source], chunk.rows[kept], val_ratio, seed)
            _split_write(builders, flat, lengths, is_val, counts)
            docs_done += len(kept)
            bar.update(len(kept))
            report_progress(len(kept))
            if log_interval and docs_done >= next_log:
                dt = time.perf_counter() - t0
                print(
                    f"processed {docs_done} documents ({docs_done / dt:.1f} docs/s, "
                    f"{sum(c[1] for c in counts.values()) / dt / 1e6:.2f} M tokens/s)",
                    file=sys.stderr,
                )
                next_log += log_interval

        if workers <= 1:
            tok = info.load()
            for chunk in chunks:
                consume(chunk, encode_raw_chunk(chunk, eod, tok))
        else:
            pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=mp_context(), initializer=_worker_init, initargs=(info.json,)
            )
            inflight: deque = deque()
            for chunk in chunks:
                inflight.append((chunk, pool.submit(encode_raw_chunk, chunk, eod)))
                while len(inflight) > 2 * workers:
                    c, fut = inflight.popleft()
                    consume(c, fut.result())
            while inflight:
                c, fut = inflight.popleft()
                consume(c, fut.result())
        for b in builders.values():
            b.finalize()
    except BaseException:
        for b in builders.values():
            b.abort()
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    elapsed = time.perf_counter() - t0
    for split, (d, t) in counts.items():
        stats.kept.add(t, split, docs=d)  # per split: docs and tokens (the "bytes" slot holds tokens here)
    report = {
        "inputs": list(plan.files),
        "tokenizer": str(tokenizer),
        "vocab_size": info.vocab_size,
        "padded_vocab_size": info.padded_vocab_size,
        "dtype": np.dtype(np_dtype).name,
        "append_eod": append_eod,
        "eod_id": eod,
        "val_ratio": val_ratio,
        "seed": seed,
        "shard": [shard_index, num_shards],
        "outputs": {
            s: {"prefix": prefixes[s], "documents": counts[s][0], "tokens": counts[s][1]} for s in prefixes
        },
        "skipped": {r: c.docs for r, c in stats.dropped.items()},
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(sum(c[1] for c in counts.values()) / max(elapsed, 1e-9), 1),
    }
    write_json_atomic(f"{prefixes['train'][: -len('_train')]}_tokenize.json", report)
    return TokenizeResult(prefixes, report)
