"""Held-out perplexity by domain during training: `eval.sets: {wiki: PREFIX, code: PREFIX, ...}` scored at
every validation and at the end, through the driver's model under any parallel layout.

Each set is one token stream (`llmctl.core.heldout`, what `llmctl eval run --task ppl` reads too) cut into
non-overlapping windows of the current stage's seq_length + 1 tokens: inputs of exactly the training shape
(a pipeline's stages are built for it), each scoring its seq_length targets; the last, shorter window is
padded with unscored targets. Windows are dealt to the data-parallel ranks (every rank runs the same number
of micro-batches of micro_batch_size rows, padded, so sharded and pipelined layouts stay in step) and the
sums reduced like the training loss. `llmctl eval run --task ppl` on the checkpoint scores the same windows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..heldout import check_in_vocab, is_text_set, load_tokens, sliding_windows
from .config import TrainConfig


class HeldoutSets:
    def __init__(self, cfg: TrainConfig):
        self.streams: dict[str, np.ndarray] = {}
        sets = cfg.eval.sets
        tokenizer = None
        if any(is_text_set(p) for p in sets.values()):
            if not cfg.data.tokenizer:
                name = next(n for n, p in sets.items() if is_text_set(p))
                raise UserError(f"config key 'eval.sets.{name}': text needs data.tokenizer to be tokenized")
            from ..tokenizer import load_tokenizer

            tokenizer = load_tokenizer(cfg.data.tokenizer)
        for name, path in sets.items():
            stream, _, _ = load_tokens(path, tokenizer)
            stream = stream[:cfg.eval.set_tokens] if cfg.eval.set_tokens else stream
            check_in_vocab(stream, cfg.model.vocab_size, f"eval.sets.{name} ({path})")
            if len(stream) < 2:
                raise UserError(f"config key 'eval.sets.{name}': {path} has {len(stream)} tokens; perplexity needs "
                                "at least 2")
            self.streams[name] = stream

    def __bool__(self) -> bool:
        return bool(self.streams)

    def batches(self, stream: np.ndarray, seq: int, rows: int, dp_rank: int, dp_size: int):
        """This rank's (inputs [rows, seq], targets [rows, seq]) micro-batches; every rank gets as many."""
        windows = sliding_windows(len(stream), seq + 1, seq + 1)
        mine = windows[dp_rank::dp_size]
        n_batches = math.ceil(math.ceil(len(windows) / dp_size) / rows)
        for b in range(n_batches):
            inputs = torch.zeros(rows, seq, dtype=torch.long)
            targets = torch.full((rows, seq), -100, dtype=torch.long)
            for r, w in enumerate(mine[b * rows:(b + 1) * rows]):
                tokens = torch.as_tensor(stream[w.begin:w.end])
                n = len(tokens) - 1
                inputs[r, :n] = tokens[:-1]
                scored = tokens[1:].clone()
                scored[:w.score_from - w.begin - 1] = -100
                targets[r, :n] = scored
            yield inputs, targets

    @torch.no_grad()
    def evaluate(self, trainer: Any) -> dict[str, Any]:
        """{ppl/NAME, nll/NAME, tokens/NAME} for every set, at the current stage's shape."""
        sums = torch.zeros(2 * len(self.streams), dtype=torch.float64, device=trainer.device)
        for i, stream in enumerate(self.streams.values()):
            for inputs, targets in self.batches(stream, trainer.seq, trainer.mbs, trainer.par.dp_rank,
                                                trainer.par.dp_size):
                inputs, targets = inputs.to(trainer.device), targets.to(trainer.device)
                with trainer.autocast():
                    loss = trainer.forward_model(inputs, targets)
                sums[2 * i] += loss.double().sum()
                sums[2 * i + 1] += (targets != -100).sum()
        values = trainer.par.sum_over_dp(sums.float()).tolist()  # fp32 on the wire: every backend has it
        out: dict[str, Any] = {}
        for i, name in enumerate(self.streams):
            nll, count = values[2 * i], max(values[2 * i + 1], 1.0)
            out.update({f"ppl/{name}": math.exp(nll / count), f"nll/{name}": nll / count,
                        f"tokens/{name}": int(count)})
        return out
