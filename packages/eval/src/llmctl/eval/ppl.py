"""Perplexity of a token stream, with the sliding window of HF's "Perplexity of fixed-length models" guide:
windows of `window` tokens every `stride` tokens, each window scoring only the tokens no earlier window scored
(the first token of the first window has no context and is never scored). stride == window is plain
non-overlapping chunks; a smaller stride gives every scored token more context at more compute.

Inputs: a Megatron MMIDIDX prefix (`P.bin` + `P.idx`, e.g. what `llmctl data tokenize` writes), a text file,
or a directory of `*.txt` files (read by `llmctl.core.heldout`, which training's held-out sets share).
Documents are concatenated in order into one stream (the .bin already holds an EOD per document; text files
are joined with the tokenizer's eos).

Without `--data-dir`, a llmctl checkpoint whose run had held-out sets (`eval.sets: {wiki: PREFIX, ...}`) is
scored on those sets, as the run scored them: windows of the stage's seq_length + 1 tokens (the training
shape), the first `eval.set_tokens` tokens of each; per set `ppl/NAME`, `nll/NAME`, `tokens/NAME`, plus all
sets pooled. The numbers equal the run's logged `ppl/NAME` at that checkpoint's iteration.
"""

from __future__ import annotations

import math
from pathlib import Path

import click
import numpy as np

from llmctl.core.errors import UserError
from llmctl.core.heldout import Window, check_in_vocab, load_tokens, read_indexed, sliding_windows  # noqa: F401

from .api import EvalContext, TaskResult

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
        if ctx.data_dir is None:
            sets = checkpoint_sets(ctx)
            if sets is not None:
                return self._run_sets(ctx, *sets)
        source = ctx.require_data_dir(self.name)
        stream, files, docs = load_tokens(source, ctx.loaded.tokenizer, ctx.limit)
        check_in_vocab(stream, ctx.loaded.config.vocab_size, source)
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

    def _run_sets(self, ctx: EvalContext, sets: dict[str, str], window: int, set_tokens: int | None,
                  config: Path) -> TaskResult:
        """Every held-out set of the checkpoint's run, each as the run scored it."""
        window = ctx.options.get("ppl_window") or window
        stride = ctx.options.get("ppl_stride") or window
        per_set, files, total_nll, total_count = {}, [], 0.0, 0
        for name, path in sets.items():
            stream, read, _ = load_tokens(path, ctx.loaded.tokenizer, ctx.limit)
            stream = stream[:set_tokens] if set_tokens else stream
            check_in_vocab(stream, ctx.loaded.config.vocab_size, path)
            windows = sliding_windows(len(stream), window, stride)
            if not windows:
                raise UserError(f"eval.sets.{name} ({path}): {len(stream)} tokens; perplexity needs at least 2")
            nll, count = window_nll(ctx.model, stream, ctx.shard(windows), ctx.batch_size, desc=f"ppl {name}")
            parts = ctx.gather([(nll, count)])
            nll, count = sum(p[0] for p in parts), sum(p[1] for p in parts)
            per_set[name] = (nll, count)
            total_nll, total_count = total_nll + nll, total_count + count
            files += [str(f) for f in read]
        metrics = {"ppl": math.exp(total_nll / total_count), "nll": total_nll / total_count, "tokens": total_count}
        for name, (nll, count) in per_set.items():
            metrics.update({f"ppl/{name}": math.exp(nll / count), f"nll/{name}": nll / count, f"tokens/{name}": count})
        return TaskResult(self.name, metrics, data_files=files,
                          info={"sets": sets, "config": str(config), "window": window, "stride": stride,
                                "set_tokens": set_tokens})


def checkpoint_sets(ctx: EvalContext) -> tuple[dict[str, str], int, int | None, Path] | None:
    """(eval.sets, window = the stage's seq_length + 1 at the checkpoint's iteration, eval.set_tokens,
    config.yaml) of a llmctl checkpoint whose run had held-out sets; None otherwise."""
    if ctx.loaded.source == "hf":
        return None
    from llmctl.core.config import load_yaml
    from llmctl.core.nn.checkpoint import resolve_iteration_dir
    from llmctl.core.train.config import load_train_config

    it_dir = resolve_iteration_dir(ctx.loaded.path, ctx.iteration)
    config = it_dir / "config.yaml"
    if not config.is_file():
        return None
    saved = load_yaml(config)
    sets = (saved.get("eval") or {}).get("sets") or {}
    if not sets:
        return None
    cfg = load_train_config(saved, resolve_vocab=False)
    iteration = int(it_dir.name.split("_")[-1])
    return dict(sets), cfg.plan().stage_at(max(iteration, 1)).seq_length + 1, cfg.eval.set_tokens, config
