"""`llmctl data sft`: instruction/preference records -> MindSpeed's `PREFIX_packed_*_document` files.

Why this layout: it is what MindSpeed-LLM's `preprocess_data.py` writes and its finetuning reads
(`get_packed_indexed_dataset` globs `PREFIX_packed_*_document*`), so data preprocessed by either tool trains
in the other: int32 MMIDIDX files, one per key — `input_ids`, `attention_mask`, `labels` for instruction data,
`chosen_input_ids`, `chosen_labels`, `rejected_input_ids`, `rejected_labels` for preference pairs — with
labels -100 on every token outside assistant turns. A report (`PREFIX_sft.json`) counts records, samples,
truncated and dropped samples (with the first few record locations), tokens and trained tokens.

Records are read with the llmctl-data readers (jsonl/json/parquet/csv), tokenised in `workers` processes in
input order, so the output does not depend on the worker count.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from llmctl.core.errors import UserError

from .handlers import EmptyResponse, Handler, PairExample, get_handler
from .pack import IGNORE_INDEX, fit, fit_pair, pack, prompt_length
from .templates import Template, encode_conversation, get_template

SFT_KEYS = ("input_ids", "attention_mask", "labels")
PAIR_KEYS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")
CHUNK = 256
EXAMPLES = 5  # record locations kept per counter in the report


def output_path(prefix: str | os.PathLike, key: str) -> str:
    """MindSpeed's name for one key's indexed dataset (without .bin/.idx)."""
    return f"{prefix}_packed_{key}_document"


def iter_records(paths: Sequence[str]) -> Iterator[tuple[str, str, dict]]:
    """(path, where, record) for every record: `file:line` for jsonl, `file: item N` / `row N` for the others."""
    from ..readers import decode_line, parse_json_line, reader_for

    for path in paths:
        reader = reader_for(path)
        if reader.__name__ == "read_jsonl" and not path.endswith(".gz"):
            with open(path, "rb") as f:
                for lineno, raw in enumerate(f, 1):
                    line = decode_line(path, lineno, raw)
                    if line.strip():
                        yield path, f"{path}:{lineno}", parse_json_line(path, lineno, line)
            continue
        word = "item" if reader.__name__ == "read_json" else "row"
        for i, rec in enumerate(reader(path)):
            yield path, f"{path}: {word} {i}", rec


# ---- tokenising (runs in worker processes) ------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _init(tokenizer_path: str, template: Template, handler_name: str, map_keys: dict | None,
          skip_empty: bool) -> None:
    from llmctl.core.tokenizer import load_tokenizer

    _STATE.update(tok=load_tokenizer(tokenizer_path), template=template,
                  handler=get_handler(handler_name, map_keys), skip_empty=skip_empty)


def encode_record(tok: Any, template: Template, handler: Handler, where: str, record: dict) -> tuple:
    """One record -> (input_ids, labels) or, for pairwise, ((chosen ids, labels), (rejected ids, labels))."""
    ex = handler.convert(record, where)
    try:
        if isinstance(ex, PairExample):
            halves = []
            for answer in (ex.chosen, ex.rejected):
                msgs = ex.prompt + [{"role": "assistant", "content": answer}]
                ids, labels = encode_conversation(tok, template, msgs, system=ex.system)
                p = prompt_length(labels)
                halves.append((ids, [IGNORE_INDEX] * p + labels[p:]))  # earlier answers are prompt here
            return tuple(halves)
        return encode_conversation(tok, template, ex.messages, system=ex.system)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def _encode_chunk(chunk: list[tuple[str, dict]]) -> list[tuple[str, Any]]:
    out = []
    for where, rec in chunk:
        try:
            out.append((where, encode_record(_STATE["tok"], _STATE["template"], _STATE["handler"], where, rec)))
        except EmptyResponse as e:
            out.append((where, _Skipped() if _STATE["skip_empty"] else _Failed(str(e))))
            if not _STATE["skip_empty"]:
                break
        except UserError as e:
            out.append((where, _Failed(str(e))))
            break  # the first bad record stops the run
    return out


class _Failed(str):
    """A worker's UserError message, sent back as a plain string (picklable) and re-raised in order."""


class _Skipped:
    """A record with an empty response, under --skip-empty."""


def _chunks(records: Iterator[tuple[str, str, dict]], handler: Handler) -> Iterator[list[tuple[str, dict]]]:
    chunk: list[tuple[str, dict]] = []
    seen_files: set[str] = set()
    for path, where, rec in records:
        if path not in seen_files:
            seen_files.add(path)
            handler.check_columns(rec, where)
        chunk.append((where, rec))
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _encoded(paths: Sequence[str], tokenizer_path: str, template: Template, handler_name: str,
             map_keys: dict | None, workers: int, skip_empty: bool) -> Iterator[tuple[str, Any]]:
    handler = get_handler(handler_name, map_keys)
    chunks = _chunks(iter_records(paths), handler)
    args = (tokenizer_path, template, handler_name, map_keys, skip_empty)
    if workers <= 1:
        _init(*args)
        results: Iterator = map(_encode_chunk, chunks)
        pool = contextlib.nullcontext()
    else:
        pool = mp.get_context("spawn").Pool(workers, initializer=_init, initargs=args)
        results = pool.imap(_encode_chunk, chunks)
    with pool:
        for batch in results:
            for where, value in batch:
                if isinstance(value, _Failed):
                    raise UserError(str(value))
                yield where, value


# ---- writing ------------------------------------------------------------------------------------------------
class _Writers:
    """One int32 MMIDIDX builder per key; published together, or all discarded on error."""

    def __init__(self, prefix: str, keys: Sequence[str]):
        from llmctl.core.mmidx import IndexedDatasetBuilder

        self.builders = {k: IndexedDatasetBuilder(output_path(prefix, k), dtype=np.int32) for k in keys}

    def add(self, **arrays: Sequence[int]) -> None:
        for k, a in arrays.items():
            self.builders[k].add_document(np.asarray(a, dtype=np.int32))

    def finalize(self) -> None:
        for b in self.builders.values():
            b.finalize()

    def abort(self) -> None:
        for b in self.builders.values():
            with contextlib.suppress(Exception):
                b.abort()


def _pad_id(tokenizer_path: str, template: Template) -> int:
    from llmctl.core.tokenizer import load_tokenizer

    from .templates import eos_token_id

    tok = load_tokenizer(tokenizer_path)
    pad = tok.hf.pad_token_id
    return int(pad) if pad is not None else eos_token_id(tok, template)


def preprocess_sft(inputs: Sequence[str], tokenizer: str, output_prefix: str, handler_name: str,
                   prompt_type: str, prompt_type_path: str | None = None, map_keys: dict | str | None = None,
                   workers: int = 1, seq_length: int | None = None, pack_samples: bool = False,
                   neat_pack: bool = False, skip_empty: bool = False, warn=None, on_record=None) -> dict:
    """Run the whole stage; returns the report (also written to `PREFIX_sft.json`)."""
    from llmctl.core.io import write_json_atomic

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
    paths = expand_inputs(inputs)
    max_len = seq_length - 1 if seq_length else None
    keys = PAIR_KEYS if handler.pairwise else SFT_KEYS
    Path(output_prefix).parent.mkdir(parents=True, exist_ok=True)
    counts = {"records": 0, "samples": 0, "truncated": 0, "dropped": 0, "empty_skipped": 0, "tokens": 0,
              "trained_tokens": 0}
    examples: dict[str, list[str]] = {"truncated": [], "dropped": [], "empty_skipped": []}
    kept: list[tuple[list[int], list[int]]] = []
    writers = _Writers(output_prefix, keys)
    try:
        for where, value in _encoded(paths, tokenizer, template, handler.name, handler.map_keys,
                                     max(1, workers), skip_empty):
            counts["records"] += 1
            if on_record is not None:
                on_record()
            if isinstance(value, _Skipped):
                counts["empty_skipped"] += 1
                if len(examples["empty_skipped"]) < EXAMPLES:
                    examples["empty_skipped"].append(where)
                continue
            if handler.pairwise:
                chosen, rejected, status = fit_pair(value[0], value[1], max_len)
            else:
                ids, labels, status = fit(value[0], value[1], max_len)
            if status != "ok":
                counts[status] += 1
                if len(examples[status]) < EXAMPLES:
                    examples[status].append(where)
                if status == "dropped":
                    continue
            counts["samples"] += 1
            if handler.pairwise:
                writers.add(chosen_input_ids=chosen[0], chosen_labels=chosen[1],
                            rejected_input_ids=rejected[0], rejected_labels=rejected[1])
                counts["tokens"] += len(chosen[0]) + len(rejected[0])
                counts["trained_tokens"] += sum(lab != IGNORE_INDEX for lab in chosen[1] + rejected[1])
                continue
            counts["tokens"] += len(ids)
            counts["trained_tokens"] += sum(lab != IGNORE_INDEX for lab in labels)
            if packing:
                kept.append((ids, labels))
            else:
                writers.add(input_ids=ids, attention_mask=[1] * len(ids), labels=labels)
        if not counts["samples"]:
            raise UserError(f"{', '.join(paths)}: no samples to write ({counts['records']} records, "
                            f"{counts['dropped']} dropped as too long)")
        if packing:
            counts["packed_sequences"] = 0
            for ids, mask, labels, _members in pack(kept, seq_length, _pad_id(tokenizer, template), neat_pack):
                writers.add(input_ids=ids, attention_mask=mask, labels=labels)
                counts["packed_sequences"] += 1
        writers.finalize()
    except BaseException:
        writers.abort()
        raise
    report = {
        "stage": "sft", "inputs": list(paths), "output_prefix": str(output_prefix),
        "files": [output_path(output_prefix, k) for k in keys], "handler": handler.name,
        "prompt_type": template.name, "template_source": template.source, "seq_length": seq_length,
        "pack": bool(pack_samples and not neat_pack), "neat_pack": bool(neat_pack), **counts,
        "truncated_examples": examples["truncated"], "dropped_examples": examples["dropped"],
        "empty_skipped_examples": examples["empty_skipped"],
    }
    write_json_atomic(f"{output_prefix}_sft.json", report)
    if warn is not None:
        limit = f"{max_len} tokens (--seq-length {seq_length} minus one)"
        if counts["truncated"]:
            warn(f"warning: {counts['truncated']} samples were longer than {limit} and lost their earliest "
                 f"prompt tokens; first: {examples['truncated'][0]}")
        if counts["empty_skipped"]:
            warn(f"warning: {counts['empty_skipped']} records with an empty response skipped (--skip-empty); "
                 f"first: {examples['empty_skipped'][0]}")
        if counts["dropped"]:
            warn(f"warning: {counts['dropped']} samples were dropped: their response alone is longer than "
                 f"{limit}; first: {examples['dropped'][0]}")
    return report
