"""Helpers for the parallel-strategy tests (a uniquely named module)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import child_env, kill_tree, rank_pid, run_tree, torchrun, train_losses  # noqa: F401

ITERS = 10
#: The tokenizer's size: odd, as `llmctl data train-tokenizer` gives on a small corpus. Every run takes the
#: vocabulary from the tokenizer (no model.vocab_size override): padded to 128 rows in one process and 256 at
#: TP 2 (TP rank 1 holds padding only), so every layout is compared with a differently padded one process.
VOCAB = 69


def write_pattern_corpus(prefix: Path, docs: int = 96, vocab: int = VOCAB) -> Path:
    """PREFIX_train/_val: arithmetic token runs (a stride per document) over ids 3..vocab-1, learnable within
    ten steps; and PREFIX_tokenizer/, a tokenizer of exactly `vocab` ids (`tokenizer_of`)."""
    from llmctl.core.mmidx import IndexedDatasetBuilder

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        with IndexedDatasetBuilder(f"{prefix}_{split}", dtype=np.uint16) as builder:
            for _ in range(docs):
                start, stride, n = rng.integers(3, 200), rng.integers(1, 4), rng.integers(40, 120)
                builder.add_document((start + stride * np.arange(n)) % (vocab - 3) + 3)
    write_word_tokenizer(tokenizer_of(prefix), vocab)
    return prefix


def tokenizer_of(corpus: Path) -> Path:
    return Path(f"{corpus}_tokenizer")


def write_word_tokenizer(out: Path, vocab: int) -> Path:
    """An HF word-level tokenizer of exactly `vocab` ids: <pad> <s> </s>, then w3 ... (one id per word)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", *(f"w{i}" for i in range(3, vocab))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<pad>")
    fast.save_pretrained(out)
    assert len(fast) == vocab
    return out


def sets(corpus: Path, run: Path, *extra: str) -> list[str]:
    return [f"data.path={corpus}", f"data.tokenizer={tokenizer_of(corpus)}", "data.seq_length=32",
            f"train.train_iters={ITERS}",
            "train.global_batch_size=8", "train.micro_batch_size=2", "train.lr=1e-2", "train.warmup_iters=2",
            "eval.iters=1", "eval.interval=0", f"checkpoint.dir={run / 'ckpt'}", "checkpoint.interval=5",
            "checkpoint.keep=null", f"logging.dir={run / 'logs'}", "logging.name=run", "logging.interval=1",
            "model.max_seq_len=64", *extra]


def cli_args(overrides: list[str]) -> list[str]:
    return ["pretrain", "-c", "tiny", *[a for s in overrides for a in ("--set", s)]]


def pretrain_in_process(overrides: list[str], resume: str | None = None):
    """A 1-process run here, on one thread like the torchrun children (fp32 CPU results depend on it)."""
    from llmctl.core.train import load_train_config, pretrain

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pretrain(load_train_config("tiny", overrides), resume=resume, echo=lambda line: None)
    finally:
        torch.set_num_threads(threads)


def launch_cached(cache, root, corpus, site, name, overrides, *, nproc: int = 2, env=None, args=()):
    if name not in cache:
        run = root / name
        done = run_tree(torchrun(nproc, *cli_args(sets(corpus, run, *overrides)), *args),
                         child_env(site, **(env or {})), timeout=240)
        assert done.returncode == 0, done.stdout[-4000:]
        (run / "output.txt").write_text(done.stdout)  # what the ranks printed
        cache[name] = run
    return cache[name]


def records(run: Path) -> list[dict]:
    path = run / "logs" / "run.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if "lr" in r and "event" not in r]


def losses(run: Path) -> dict[int, float]:
    return train_losses(run / "logs" / "run.jsonl")


def assert_losses_match(run: Path, reference: Path, rel: float, steps=None) -> None:
    got, want = losses(run), losses(reference)
    steps = sorted(want) if steps is None else list(steps)
    assert set(steps) <= set(got), (sorted(got), steps)
    bad = [(s, got[s], want[s]) for s in steps if got[s] != pytest.approx(want[s], rel=rel)]
    assert not bad, f"(step, got, one process) beyond rel {rel}: {bad}"


def final_state(run: Path, iteration: int | None = None) -> dict:
    from llmctl.core.nn.checkpoint import load_checkpoint

    return load_checkpoint(run / "ckpt", iteration)[0]


def real_rows(t: torch.Tensor) -> torch.Tensor:
    """A vocabulary weight's (or its AdamW moment's) real rows; any other tensor as it is."""
    return t[:VOCAB] if t.dim() == 2 and t.shape[0] in PADDED else t


#: the rows a run pads VOCAB to at TP 1, 2, 4, 8 (the tiny model has no other matrix that tall)
PADDED = {-(-VOCAB // (128 * tp)) * 128 * tp for tp in (1, 2, 4, 8)}


def assert_same_state(got: dict, want: dict, rtol: float, atol: float) -> None:
    """Model weights and the optimizer state, in torch's native (index-keyed) layout: the vocabulary's real
    rows equal, its padding (more rows at TP 2 than in one process) all zero, never trained."""
    assert got["model"].keys() == want["model"].keys()
    for name, tensor in want["model"].items():
        assert_real_rows_close(got["model"][name], tensor, rtol, atol, name)
    go, wo = got["optimizer"], want["optimizer"]
    assert go["state"].keys() == wo["state"].keys()
    assert [sorted(g) for g in go["param_groups"]] == [sorted(g) for g in wo["param_groups"]]
    assert [g["params"] for g in go["param_groups"]] == [g["params"] for g in wo["param_groups"]]
    for i, s in wo["state"].items():
        for key, value in s.items():
            assert_real_rows_close(go["state"][i][key], value, rtol, atol, f"{i}.{key}")


def assert_real_rows_close(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float, name: str) -> None:
    torch.testing.assert_close(real_rows(got), real_rows(want), rtol=rtol, atol=atol, msg=name)
    for t in (got, want):
        if real_rows(t) is not t:
            assert not t[VOCAB:].any(), f"{name}: padded rows of {tuple(t.shape)} are not all zero"
