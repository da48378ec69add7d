"""One SFT record -> token ids and labels, and the int32 MMIDIDX writers of MindSpeed's packed layout.

Used by the SFT stage's shards (`preprocess.py`); kept apart so the stage module holds only the plan,
the per-shard loop and the key-order merge.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Sequence

import numpy as np

from llmctl.core.errors import UserError

from .handlers import Handler, PairExample
from .pack import IGNORE_INDEX, prompt_length
from .templates import Template, encode_conversation

SFT_KEYS = ("input_ids", "attention_mask", "labels")
PAIR_KEYS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")


def output_path(prefix: str | os.PathLike, key: str) -> str:
    """MindSpeed's name for one key's indexed dataset (without .bin/.idx)."""
    return f"{prefix}_packed_{key}_document"


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


class Writers:
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


def pad_id(tokenizer_path: str, template: Template) -> int:
    from llmctl.core.tokenizer import load_tokenizer

    from .templates import eos_token_id

    tok = load_tokenizer(tokenizer_path)
    pad = tok.hf.pad_token_id
    return int(pad) if pad is not None else eos_token_id(tok, template)
