"""Tokenize a corpus into Megatron MMIDIDX `PREFIX_train` / `PREFIX_val` datasets: a stage on `run_stage`.

Each shard streams its documents in chunks of raw records (`chunks.py`) through the fast `tokenizers` backend's
`encode_batch` into two builders, so memory stays flat whatever the corpus size. A document goes to val when a
hash of (file, row, seed) falls under --val-ratio. Every shard also records each document's (file, row) key,
and the final step merges the shards' datasets in key order: the output is byte-identical whatever the number
of shards, workers or executor, and a rerun after a crash only redoes the shards that had not finished.
With --shard-index (a Slurm array) a shard writes `PREFIX-<i>-of-<n>_{train,val}` for `llmctl data merge`.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmctl.core.errors import UserError
from llmctl.core.io import write_json_atomic

from ..readers.chunks import decode_chunk
from ..executors import Executor, ShardDocuments, Shards, ShardStage, run_stage
from ..executors.local import LocalExecutor
from ..hashing import row_keys, stable_hash64, uniform01
from ..hf_tokenizer import TokenizerInfo, load_tokenizer_info
from llmctl.core.mmidx import IndexedDatasetBuilder, dtype_for_vocab
from ..pipeline import StageStats, check_shard, make_bar, report_progress, shard_tag
from ..readers import expand_inputs
from .merge import merge_in_key_order
from ..writers import side_path

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


# ---- encoding ------------------------------------------------------------------------------------------------


def encode_chunk(texts: list[str], eod: int | None, tok) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of `texts` concatenated (EOD after each when `eod` is set) and the per-document lengths."""
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


def _is_val(src: int, rows: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Val membership from a hash of (file, row, seed): independent of chunking, workers and shards."""
    if ratio <= 0:
        return np.zeros(len(rows), dtype=bool)
    keys = row_keys(0, np.asarray(rows), seed) ^ np.uint64(src)
    return uniform01(keys) < ratio


def output_prefixes(
    output_prefix: str, val_ratio: float, shard_index: int = 0, num_shards: int = 1
) -> dict[str, str]:
    base = output_prefix if num_shards == 1 else f"{output_prefix}-{shard_tag(shard_index, num_shards)}"
    out = {"train": f"{base}_train"}
    if val_ratio > 0:
        out["val"] = f"{base}_val"
    return out


def _check_options(val_ratio: float, append_eod: bool, tokenizer: str, info: TokenizerInfo) -> int | None:
    if not 0 <= val_ratio < 1:
        raise UserError(f"--val-ratio must be in [0, 1), got {val_ratio}")
    if not append_eod:
        return None
    if info.eos_id is None:
        raise UserError(
            f"--tokenizer {tokenizer}: no EOS token found to append as EOD "
            "(set eos_token in tokenizer_config.json or pass --no-append-eod)"
        )
    return int(info.eos_id)


# ---- the stage -------------------------------------------------------------------------------------------------

KEY_ROW_BITS = 40  # a document's merge key: (global file index << 40) | row in that file


class TokenizeStage(ShardStage):
    """One shard -> `<work>/shard-<i>-of-<n>_{train,val}` plus each document's key; `merge` orders them."""

    name = "tokenize"

    def __init__(self, files, tokenizer, output_prefix, text_key=None, append_eod=True, val_ratio=0.01,
                 seed=1234, dtype="auto", log_interval=0, slurm=False):
        self.files, self.tokenizer, self.output_prefix = list(files), str(tokenizer), str(output_prefix)
        self.text_key, self.append_eod, self.val_ratio, self.seed = text_key, append_eod, val_ratio, seed
        self.dtype, self.log_interval, self.slurm = dtype, log_interval, slurm
        self.info = load_tokenizer_info(tokenizer)
        self.np_dtype = resolve_dtype(dtype, self.info.vocab_size)
        self.eod = _check_options(val_ratio, append_eod, self.tokenizer, self.info)
        self.work = side_path(Path(self.output_prefix), "tokenize_work")
        self.marker_dir = self.work / "_done"
        root = os.path.commonpath([os.path.abspath(os.path.dirname(f)) for f in self.files])
        self.source_hash = {f: stable_hash64(os.path.relpath(os.path.abspath(f), root)) for f in self.files}

    def fingerprint(self) -> dict[str, Any]:
        return {"tokenizer": self.info.json, "prefix": self.output_prefix, "text_key": self.text_key,
                "eod": self.eod, "val_ratio": self.val_ratio, "seed": self.seed, "dtype": str(self.np_dtype),
                "slurm": self.slurm}

    def shard_prefixes(self, shard: int, num_shards: int) -> dict[str, str]:
        if self.slurm:
            return output_prefixes(self.output_prefix, self.val_ratio, shard, num_shards)
        return output_prefixes(str(self.work / f"shard-{shard_tag(shard, num_shards)}"), self.val_ratio)

    def run(self, documents: ShardDocuments, shard: int, num_shards: int) -> dict[str, Any]:
        prefixes = self.shard_prefixes(shard, num_shards)
        file_index = {f: i for i, f in enumerate(self.files)}
        stats = StageStats("tokenize")
        counts = {s: [0, 0] for s in prefixes}
        keys: dict[str, list[np.ndarray]] = {s: [] for s in prefixes}
        builders = {s: IndexedDatasetBuilder(p, self.np_dtype) for s, p in prefixes.items()}
        tok = self.info.load()
        t0 = time.perf_counter()
        bar = make_bar(self.quiet, desc=f"tokenize {shard}/{num_shards}", unit="docs")
        done, next_log = 0, self.log_interval
        try:
            for chunk in documents.chunks(CHUNK_DOCS, CHUNK_CHARS):
                texts, kept = decode_chunk(chunk)
                flat, lengths = encode_chunk(texts, self.eod, tok) if texts else (np.zeros(0, np.int32),
                                                                                 np.zeros(0, np.int64))
                for _ in range(int((~kept).sum())):
                    stats.drop("empty", 0)
                rows = chunk.rows[kept]
                is_val = _is_val(self.source_hash[chunk.source], rows, self.val_ratio, self.seed)
                key = (np.int64(file_index[chunk.source]) << KEY_ROW_BITS) | rows
                token_is_val = np.repeat(is_val, lengths)
                for split, mask, tmask in (("train", ~is_val, ~token_is_val), ("val", is_val, token_is_val)):
                    if split in builders and mask.any():
                        builders[split].add_documents(flat[tmask], lengths[mask])
                        keys[split].append(key[mask])
                        counts[split][0] += int(mask.sum())
                        counts[split][1] += int(lengths[mask].sum())
                done += len(kept)
                bar.update(len(kept))
                report_progress(len(kept))
                if self.log_interval and done >= next_log:
                    dt = max(time.perf_counter() - t0, 1e-9)
                    tokens = sum(c[1] for c in counts.values())
                    print(f"processed {done} documents ({done / dt:.1f} docs/s, {tokens / dt / 1e6:.2f} M tokens/s)",
                          file=sys.stderr)
                    next_log += self.log_interval
            for split, b in builders.items():
                if not self.slurm:
                    np.save(f"{prefixes[split]}.keys.npy", np.concatenate(keys[split] or [np.zeros(0, np.int64)]))
                b.finalize()
        except BaseException:
            for b in builders.values():
                b.abort()
            raise
        finally:
            bar.close()
        report = self._report(list(documents.files), prefixes, counts, stats, [shard, num_shards])
        if self.slurm:
            write_json_atomic(f"{prefixes['train'][: -len('_train')]}_tokenize.json", report)
        return report

    def _report(self, files, prefixes, counts, stats, shard) -> dict[str, Any]:
        return {
            "inputs": files,
            "tokenizer": self.tokenizer,
            "vocab_size": self.info.vocab_size,
            "padded_vocab_size": self.info.padded_vocab_size,
            "dtype": np.dtype(self.np_dtype).name,
            "append_eod": self.append_eod,
            "eod_id": self.eod,
            "val_ratio": self.val_ratio,
            "seed": self.seed,
            "shard": shard,
            "outputs": {s: {"prefix": prefixes[s], "documents": counts[s][0], "tokens": counts[s][1]}
                        for s in prefixes},
            "skipped": {r: c.docs for r, c in stats.dropped.items()},
        }

    def merge(self, reports: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        """Sum the shards' counts; after a full run, write PREFIX_{train,val} in key order and drop the work dir."""
        finals = output_prefixes(self.output_prefix, self.val_ratio)
        counts = {s: [sum(r["outputs"][s][k] for r in reports) for k in ("documents", "tokens")] for s in finals}
        stats = StageStats("tokenize")
        for r in reports:
            for reason, n in r["skipped"].items():
                stats.dropped.setdefault(reason, type(stats.kept)()).add(0, None, docs=n)
        if not complete:
            return {**self._report(self.files, finals, counts, stats, reports[0]["shard"]), "shards": reports}
        for split, final in finals.items():
            merge_in_key_order([r["outputs"][split]["prefix"] for r in reports], final, self.np_dtype)
        report = self._report(self.files, finals, counts, stats, [0, 1])
        write_json_atomic(f"{self.output_prefix}_tokenize.json", report)
        shutil.rmtree(self.work, ignore_errors=True)
        return report


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
    shard_index: int | None = None,
    num_shards: int | None = None,
    executor: Executor | None = None,
) -> TokenizeResult:
    """Tokenize `inputs` into `<prefix>_train` / `<prefix>_val` on `executor` (default: `workers` processes).

    Without `shard_index` every shard runs (as many as workers unless `num_shards` says) and the result is
    merged; with it only that shard runs and writes `<prefix>-<i>-of-<n>_{train,val}`.
    """
    executor = executor or LocalExecutor(workers)
    n = num_shards or (1 if shard_index is not None else max(1, executor.workers))
    if shard_index is not None:
        check_shard(shard_index, n)
    files = expand_inputs(inputs)
    stage = TokenizeStage(files, tokenizer, output_prefix, text_key, append_eod, val_ratio, seed, dtype,
                          log_interval, slurm=shard_index is not None)
    shards = Shards(n, None if shard_index is None else (shard_index,))
    try:
        report = run_stage(stage, files, None, shards, executor)
    except BaseException:
        if not any(stage.marker_dir.glob("*.json")):  # nothing finished: nothing to resume from
            shutil.rmtree(stage.work, ignore_errors=True)
        raise
    run = report["run"]
    tokens = sum(o["tokens"] for o in report["outputs"].values())
    run["tokens_per_s"] = round(tokens / max(run["seconds"], 1e-9), 1)
    prefixes = {s: o["prefix"] for s, o in report["outputs"].items()}
    if shard_index is not None:
        prefixes = stage.shard_prefixes(shard_index, n)
    return TokenizeResult(prefixes, report)
