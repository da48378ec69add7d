"""`llmctl data sft`: instruction/preference records -> MindSpeed's `PREFIX_packed_*_document` files.

Why this layout: it is what MindSpeed-LLM's `preprocess_data.py` writes and its finetuning reads
(`get_packed_indexed_dataset` globs `PREFIX_packed_*_document*`), so data preprocessed by either tool trains
in the other: int32 MMIDIDX files, one per key — `input_ids`, `attention_mask`, `labels` for instruction data,
`chosen_input_ids`, `chosen_labels`, `rejected_input_ids`, `rejected_labels` for preference pairs — with
labels -100 on every token outside assistant turns. A report (`PREFIX_sft.json`) counts records, samples,
truncated and dropped samples (with the first few record locations), tokens and trained tokens.

A stage on `run_stage`, like tokenize: each shard encodes its records (rows numbered and named by the one
reader path) into unpacked per-key datasets under `_PREFIX.sft_work/` plus each sample's (file, row) key and
leaves a completion marker; the final step merges the shards in key order (`tokens.merge`) and, for
--pack/--neat-pack, packs the merged samples. So the output is byte-identical for any shard count, worker
count or executor, and a rerun after a crash redoes only the unfinished shards.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmctl.core.errors import UserError

from ..executors import Executor, ShardDocuments, ShardStage, run_stage_in
from ..pipeline import make_bar, report_progress, shard_tag
from .encode import PAIR_KEYS, SFT_KEYS, Writers, encode_record, output_path, pad_id
from .handlers import EmptyResponse, get_handler
from .pack import IGNORE_INDEX, fit, fit_pair, pack
from .templates import get_template

EXAMPLES = 5  # record locations kept per counter in the report
STATUSES = ("truncated", "dropped", "empty_skipped")
KEY_ROW_BITS = 40  # a sample's merge key: (global file index << 40) | row in that file


def _tokenizer_signature(path: str) -> list:
    """(name, size, mtime) of the tokenizer's files: a marker written with another tokenizer is stale."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


class SFTStage(ShardStage):
    """One shard -> `<work>/shard-<i>-of-<n>_packed_<key>_document` + keys; `merge` orders (and packs) them."""

    name = "sft"

    def __init__(self, files, tokenizer, output_prefix, handler, template, seq_length, packing, neat_pack,
                 skip_empty):
        self.files, self.tokenizer, self.output_prefix = list(files), str(tokenizer), str(output_prefix)
        self.handler, self.template, self.seq_length = handler, template, seq_length
        self.packing, self.neat_pack, self.skip_empty = packing, neat_pack, skip_empty
        self.keys = PAIR_KEYS if handler.pairwise else SFT_KEYS
        self.shard_keys = ("input_ids", "labels") if packing else self.keys  # packing rebuilds the mask
        out = Path(self.output_prefix)
        self.work = out.parent / f"_{out.name}.sft_work"
        self.marker_dir = self.work / "_done"
        self.file_index = {f: i for i, f in enumerate(self.files)}

    def fingerprint(self) -> dict[str, Any]:
        return {"tokenizer": _tokenizer_signature(self.tokenizer), "prefix": self.output_prefix,
                "handler": self.handler.name, "map_keys": self.handler.map_keys, "template": repr(self.template),
                "seq_length": self.seq_length, "packing": self.packing, "skip_empty": self.skip_empty}

    def run(self, documents: ShardDocuments, shard: int, num_shards: int) -> dict[str, Any]:
        from llmctl.core.tokenizer import load_tokenizer

        tok = load_tokenizer(self.tokenizer)
        max_len = self.seq_length - 1 if self.seq_length else None
        prefix = str(self.work / f"shard-{shard_tag(shard, num_shards)}")
        counts = dict.fromkeys(("records", "samples", "truncated", "dropped", "empty_skipped", "tokens",
                                "trained_tokens"), 0)
        examples: dict[str, list] = {s: [] for s in STATUSES}
        keys: list[int] = []
        bar = make_bar(self.quiet, desc=f"sft {shard}/{num_shards}", unit="rec")
        writers = Writers(prefix, self.shard_keys)
        try:
            for path, row, where, rec in documents.records(on_first=self.handler.check_columns):
                key = (self.file_index[path] << KEY_ROW_BITS) | row
                counts["records"] += 1
                bar.update(1)
                report_progress(1)
                status, arrays = self._sample(tok, where, rec, max_len)
                if status != "ok":
                    _note(counts, examples, status, key, where)
                if arrays is None:
                    continue
                counts["samples"] += 1
                keys.append(key)
                trained = [a for k, a in arrays.items() if k.endswith("labels")]
                counts["tokens"] += sum(len(a) for k, a in arrays.items() if k.endswith("input_ids"))
                counts["trained_tokens"] += sum(lab != IGNORE_INDEX for a in trained for lab in a)
                writers.add(**{k: arrays[k] for k in self.shard_keys})
            for k in self.shard_keys:
                np.save(f"{output_path(prefix, k)}.keys.npy", np.asarray(keys, dtype=np.int64))
            writers.finalize()
        except BaseException:
            writers.abort()
            raise
        finally:
            bar.close()
        return {"prefix": prefix, "counts": counts, "examples": examples}

    def _sample(self, tok, where: str, rec: dict, max_len: int | None) -> tuple[str, dict | None]:
        """(status, arrays by key or None): "ok", "truncated", "dropped" or "empty_skipped" (--skip-empty)."""
        try:
            value = encode_record(tok, self.template, self.handler, where, rec)
        except EmptyResponse:
            if not self.skip_empty:
                raise
            return "empty_skipped", None
        if self.handler.pairwise:
            chosen, rejected, status = fit_pair(value[0], value[1], max_len)
            arrays = {"chosen_input_ids": chosen[0], "chosen_labels": chosen[1],
                      "rejected_input_ids": rejected[0], "rejected_labels": rejected[1]}
        else:
            ids, labels, status = fit(value[0], value[1], max_len)
            arrays = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}
        return status, None if status == "dropped" else arrays

    def merge(self, reports: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        """Sum the counts; write the outputs in (file, row) order (packing the merged samples), drop the work dir."""
        from llmctl.core.io import write_json_atomic

        from ..tokens.merge import merge_in_key_order

        counts = {k: sum(r["counts"][k] for r in reports) for k in reports[0]["counts"]}
        firsts = {s: [w for _k, w in sorted(e for r in reports for e in r["examples"][s])][:EXAMPLES]
                  for s in STATUSES}
        if not counts["samples"]:
            raise UserError(f"{', '.join(self.files)}: no samples to write ({counts['records']} records, "
                            f"{counts['dropped']} dropped as too long)")
        merged = str(self.work / "merged") if self.packing else self.output_prefix
        for k in self.shard_keys:
            merge_in_key_order([output_path(r["prefix"], k) for r in reports], output_path(merged, k), np.int32)
        if self.packing:
            counts["packed_sequences"] = self._pack(merged)
        report = {
            "stage": "sft", "inputs": self.files, "output_prefix": self.output_prefix,
            "files": [output_path(self.output_prefix, k) for k in self.keys], "handler": self.handler.name,
            "prompt_type": self.template.name, "template_source": self.template.source,
            "seq_length": self.seq_length, "pack": bool(self.packing and not self.neat_pack),
            "neat_pack": bool(self.neat_pack), **counts, "truncated_examples": firsts["truncated"],
            "dropped_examples": firsts["dropped"], "empty_skipped_examples": firsts["empty_skipped"],
        }
        write_json_atomic(f"{self.output_prefix}_sft.json", report)
        shutil.rmtree(self.work, ignore_errors=True)
        return report

    def _pack(self, merged: str) -> int:
        """Greedy-knapsack the merged samples into --seq-length rows (needs every sample: done once, here)."""
        from llmctl.core.mmidx import IndexedDataset

        ids_ds = IndexedDataset(output_path(merged, "input_ids"))
        lab_ds = IndexedDataset(output_path(merged, "labels"))
        samples = [(ids_ds[i], lab_ds[i]) for i in range(len(ids_ds))]
        writers = Writers(self.output_prefix, SFT_KEYS)
        n = 0
        try:
            for ids, mask, labels, _members in pack(samples, self.seq_length, pad_id(self.tokenizer, self.template),
                                                    self.neat_pack):
                writers.add(input_ids=ids, attention_mask=mask, labels=labels)
                n += 1
            writers.finalize()
        except BaseException:
            writers.abort()
            raise
        return n


def _note(counts: dict, examples: dict, status: str, key: int, where: str) -> None:
    counts[status] += 1
    if len(examples[status]) < EXAMPLES:
        examples[status].append([key, where])


def preprocess_sft(inputs: Sequence[str], tokenizer: str, output_prefix: str, handler_name: str,
                   prompt_type: str, prompt_type_path: str | None = None, map_keys: dict | str | None = None,
                   workers: int = 1, seq_length: int | None = None, pack_samples: bool = False,
                   neat_pack: bool = False, skip_empty: bool = False, warn=None, num_shards: int | None = None,
                   executor: Executor | None = None) -> dict:
    """Run the whole stage on `executor` (default: `workers` local processes); returns the report (also
    written to `PREFIX_sft.json`) with the executor's "run" entry added."""
    from ..executors.local import LocalExecutor
    from ..readers import expand_inputs

    handler = get_handler(handler_name, map_keys)  # bad names/keys fail before any reading
    template = get_template(prompt_type, prompt_type_path)
    packing = pack_samples or neat_pack
    if packing and handler.pairwise:
        raise UserError(f"--pack/--neat-pack: {handler.name} data is not packed (MindSpeed packs instruction data only)")
    if packing and not seq_length:
        raise UserError("--pack/--neat-pack need --seq-length")
    if seq_length is not None and seq_length < 2:
        raise UserError(f"--seq-length must be at least 2, got {seq_length}")
    executor = executor or LocalExecutor(max(1, workers))
    paths = expand_inputs(inputs)
    Path(output_prefix).parent.mkdir(parents=True, exist_ok=True)
    stage = SFTStage(paths, tokenizer, output_prefix, handler, template, seq_length, packing, neat_pack, skip_empty)
    report = run_stage_in(stage, stage.work, paths, num_shards or max(1, executor.workers), executor)
    if warn is not None:
        _warn(warn, report, seq_length)
    return report


def _warn(warn, report: dict, seq_length: int | None) -> None:
    limit = f"{seq_length - 1 if seq_length else None} tokens (--seq-length {seq_length} minus one)"
    if report["truncated"]:
        warn(f"warning: {report['truncated']} samples were longer than {limit} and lost their earliest "
             f"prompt tokens; first: {report['truncated_examples'][0]}")
    if report["empty_skipped"]:
        warn(f"warning: {report['empty_skipped']} records with an empty response skipped (--skip-empty); "
             f"first: {report['empty_skipped_examples'][0]}")
    if report["dropped"]:
        warn(f"warning: {report['dropped']} samples were dropped: their response alone is longer than "
             f"{limit}; first: {report['dropped_examples'][0]}")
