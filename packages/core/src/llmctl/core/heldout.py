"""Held-out token streams and their perplexity windows, shared by training (`eval.sets`: held-out PPL by
domain at every validation) and `llmctl eval run --task ppl`, so a running job and a finished checkpoint
score the same tokens in the same windows. Torch-free.

A set is a Megatron MMIDIDX prefix (`P.bin` + `P.idx`, e.g. what `llmctl data tokenize` writes), a text file,
or a directory of `*.txt` files. Documents are concatenated in order into one stream (the .bin already holds
an EOD per document; text files are joined with the tokenizer's eos). Windows follow HF's "Perplexity of
fixed-length models": `window` tokens every `stride`, each scoring only the tokens no earlier window scored
(the first token of the first window has no context and is never scored).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import UserError
from .mmidx import IndexedDataset

if TYPE_CHECKING:
    from .tokenizer import Tokenizer


def prefix_of(path: Path) -> Path | None:
    """The MMIDIDX prefix `path` names (`P`, `P.idx` or `P.bin`), or None if it is not one."""
    base = path.with_suffix("") if path.suffix in (".idx", ".bin") else path
    idx, bin_ = Path(f"{base}.idx"), Path(f"{base}.bin")
    if idx.is_file() or bin_.is_file():
        if not (idx.is_file() and bin_.is_file()):
            raise UserError(f"{base}: indexed dataset needs both {idx.name} and {bin_.name}")
        return base
    return None


def is_text_set(path: str | Path) -> bool:
    return prefix_of(Path(path)) is None


def read_indexed(prefix: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """The sequences of a Megatron MMIDIDX dataset (memory-mapped views into PREFIX.bin), in order."""
    ds = IndexedDataset(prefix)
    return [ds[i] for i in range(len(ds) if limit is None else min(limit, len(ds)))]


def load_tokens(path: str | Path, tokenizer: "Tokenizer | None", limit: int | None = None
                ) -> tuple[np.ndarray, list[Path], int]:
    """(token stream, files read, documents) from an MMIDIDX prefix, a text file or a folder of .txt files;
    `limit`: the first N documents (files)."""
    path = Path(path)
    prefix = prefix_of(path)
    if prefix is not None:
        docs = read_indexed(prefix, limit)
        stream = np.concatenate(docs).astype(np.int64) if docs else np.zeros(0, np.int64)
        return stream, [Path(f"{prefix}.idx"), Path(f"{prefix}.bin")], len(docs)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise UserError(f"{path}: no *.txt files and no .bin/.idx prefix to compute perplexity on")
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"perplexity data not found: {path} (expected PREFIX with .bin/.idx, a .txt file or a folder)")
    if tokenizer is None:
        raise UserError(f"{path}: text needs a tokenizer; the model has none, pass --tokenizer DIR")
    files = files[:limit] if limit else files
    ids: list[int] = []
    for i, f in enumerate(files):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{f}: not UTF-8 text") from None
        if i and tokenizer.eos_id is not None:
            ids.append(tokenizer.eos_id)
        ids += tokenizer.encode(text, add_bos=tokenizer.adds_bos)  # as `tokenizer(text)` gives them by default
    return np.asarray(ids, dtype=np.int64), files, len(files)


@dataclasses.dataclass(frozen=True)
class Window:
    begin: int
    end: int
    score_from: int  # first position (absolute) whose token this window scores


def sliding_windows(n_tokens: int, window: int, stride: int) -> list[Window]:
    """HF's loop: windows [begin, end) every `stride` tokens; each scores [max(prev_end, begin + 1), end)."""
    if window < 2:
        raise UserError(f"perplexity window must be >= 2 tokens, got {window}")
    if not 1 <= stride <= window:
        raise UserError(f"perplexity stride must be in 1..window ({window}), got {stride}")
    out, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        if end - begin >= 2 and end > prev_end:
            out.append(Window(begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n_tokens:
            break
    return out


def check_in_vocab(stream: np.ndarray, vocab: int, source) -> None:
    if stream.size and (stream.min() < 0 or stream.max() >= vocab):
        raise UserError(f"{source}: token id {int(stream.max())} outside the model's vocabulary (0..{vocab - 1}): "
                        "tokenized with a different tokenizer?")
