"""Perplexity of a token stream, with the sliding window of HF's "Perplexity of fixed-length models" guide:
windows of `window` tokens every `stride` tokens, each window scoring only the tokens no earlier window scored
(the first token of the first window has no context and is never scored). stride == window is plain
non-overlapping chunks; a smaller stride gives every scored token more context at more compute.

Inputs: a Megatron MMIDIDX prefix (`P.bin` + `P.idx`, e.g. what `llmctl data tokenize` writes), a text file,
or a directory of `*.txt` files. The .idx is read here with numpy rather than through llmctl-data: eval depends
on core only, and the format is a fixed header plus three arrays (tested against megatron-core's writer).
Documents are concatenated in order into one stream (the .bin already holds an EOD per document; text files
are joined with the tokenizer's eos).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from llmctl.core.errors import UserError

from llmctl.core.mmidx import IndexedDataset

from .api import EvalContext, TaskResult

if TYPE_CHECKING:
    from llmctl.core.tokenizer import Tokenizer

def _prefix_of(path: Path) -> Path | None:
    """The MMIDIDX prefix `path` names (`P`, `P.idx` or `P.bin`), or None if it is not one."""
    base = path.with_suffix("") if path.suffix in (".idx", ".bin") else path
    idx, bin_ = Path(f"{base}.idx"), Path(f"{base}.bin")
    if idx.is_file() or bin_.is_file():
        if not (idx.is_file() and bin_.is_file()):
            raise UserError(f"{base}: indexed dataset needs both {idx.name} and {bin_.name}")
        return base
    return None


def read_indexed(prefix: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """The sequences of a Megatron MMIDIDX dataset (memory-mapped views into PREFIX.bin), in order."""
    ds = IndexedDataset(prefix)
    return [ds[i] for i in range(len(ds) if limit is None else min(limit, len(ds)))]


def load_tokens(path: str | Path, tokenizer: "Tokenizer | None", limit: int | None = None
                ) -> tuple[np.ndarray, list[Path], int]:
    """(token stream, files read, documents) from an MMIDIDX prefix, a text file or a folder of .txt files."""
    path = Path(path)
    prefix = _prefix_of(path)
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
    from .scoring import encode_prompt

    files = files[:limit] if limit else files
    ids: list[int] = []
    for i, f in enumerate(files):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{f}: not UTF-8 text") from None
        if i and tokenizer.eos_id is not None:
            ids.append(tokenizer.eos_id)
        ids += encode_prompt(tokenizer, text)
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


def window_nll(model, stream: np.ndarray, windows: list[Window], batch_size: int | None = None,
               desc: str = "ppl") -> tuple[float, int]:
    """(sum of token NLLs, tokens scored) over `windows`; windows of equal length run as one batch."""
    import torch

    from llmctl.core.progress import progress

    from .scoring import _batches, auto_batch_size

    param = next(model.parameters())
    device = param.device
    by_len: dict[int, list[Window]] = {}
    for w in windows:
        by_len.setdefault(w.end - w.begin, []).append(w)
    total, count = 0.0, 0
    bar = progress(total=len(windows), desc=desc, unit="win")
    with torch.inference_mode():
        for length, group in by_len.items():
            rows = batch_size or auto_batch_size(model.cfg, length, length, device, param.dtype)
            for chunk in _batches(group, rows):
                seq = torch.as_tensor(np.stack([stream[w.begin:w.end] for w in chunk]), device=device)
                targets = seq[:, 1:].clone()
                for r, w in enumerate(chunk):
                    targets[r, : w.score_from - w.begin - 1] = -100
                loss = model(seq[:, :-1], targets)
                total += float(loss.double().sum())
                count += int((targets != -100).sum())
                bar.update(len(chunk))
    bar.close()
    return total, count


class PerplexityEvaluator:
    name = "ppl"
    description = "perplexity of a .bin/.idx prefix or text, sliding window (HF's strided method)"

    def add_options(self) -> list[click.Option]:
        return [
            click.Option(["--ppl-window"], type=int, default=None,
                         help="ppl: tokens per window (default: the model's max_seq_len)."),
            click.Option(["--ppl-stride"], type=int, default=None,
                         help="ppl: tokens between window starts (default: = window, no overlap)."),
        ]

    def run(self, ctx: EvalContext) -> TaskResult:
        source = ctx.require_data_dir(self.name)
        stream, files, docs = load_tokens(source, ctx.loaded.tokenizer, ctx.limit)
        vocab = ctx.loaded.config.vocab_size
        if stream.size and (stream.min() < 0 or stream.max() >= vocab):
            raise UserError(f"{source}: token id {int(stream.max())} outside the model's vocabulary (0..{vocab - 1}): "
                            "tokenized with a different tokenizer?")
        window = ctx.options.get("ppl_window") or ctx.loaded.config.max_seq_len
        if window > ctx.loaded.config.max_seq_len:
            raise UserError(f"--ppl-window {window} exceeds the model's max_seq_len {ctx.loaded.config.max_seq_len}")
        stride = ctx.options.get("ppl_stride") or window
        windows = sliding_windows(len(stream), window, stride)
        if not windows:
            raise UserError(f"{source}: {len(stream)} tokens; perplexity needs at least 2")
        nll, count = window_nll(ctx.model, stream, ctx.shard(windows), ctx.batch_size)
        parts = ctx.gather([(nll, count)])
        nll, count = sum(p[0] for p in parts), sum(p[1] for p in parts)
        mean = nll / count
        metrics = {"ppl": math.exp(mean), "nll": mean, "tokens": count, "windows": len(windows), "documents": docs}
        return TaskResult(self.name, metrics, data_files=[str(f) for f in files],
                          info={"source": str(source), "window": window, "stride": stride})
