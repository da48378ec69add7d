"""Helpers for the finetuning tests: a tiny ChatML tokenizer and a tiny random base model built in the test,
a fixed instruction set, `llmctl data sft` runs and finetune configs. (A uniquely named module: `from
conftest import` is ambiguous across test folders.)"""

from __future__ import annotations

import json
from pathlib import Path

from chatml_tokenizer import chatml_bpe_tokenizer

#: A small fixed instruction set (answers short and distinct, so exact match is a fair test).
QA = [
    ("What is the capital of France?", "Paris."),
    ("What colour is the sky?", "Blue."),
    ("How many legs does a cat have?", "Four."),
    ("What is two plus two?", "Four is the answer."),
    ("Name a fruit that is yellow.", "A banana."),
    ("What do bees make?", "Honey."),
    ("Which planet do we live on?", "The Earth."),
    ("What is frozen water called?", "Ice."),
]
PAIRS = [  # (prompt, chosen, rejected)
    ("Say something kind.", "You are doing great.", "Go away now."),
    ("Greet me.", "Hello, nice to meet you.", "Whatever."),
    ("Describe the sun.", "It is warm and bright.", "It is boring."),
    ("Help me please.", "Of course, happy to help.", "No, do it yourself."),
]


def tiny_tokenizer(out: Path) -> Path:
    """The ChatML BPE tokenizer of these samples, saved as an HF dir."""
    texts = [t for qa in QA for t in qa] * 4 + [t for p in PAIRS for t in p] * 4 + ["system user assistant"] * 4
    return chatml_bpe_tokenizer(out, texts, vocab_size=420)


def tiny_model_config(vocab: int, family: str = "qwen2", **kw):
    from llmctl.core.model_config import ModelConfig

    base = dict(vocab_size=vocab, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden_size=128,
                max_seq_len=128, family=family, qkv_bias=family == "qwen2", norm_eps=1e-6)
    base.update(kw)
    return ModelConfig(**base)


def tiny_base(out: Path, tok_dir: Path, *, fmt: str = "hf", seed: int = 0, **kw) -> Path:
    """A randomly initialised tiny model saved as an HF dir (fmt="hf") or a llmctl checkpoint ("native")."""
    import torch

    from llmctl.core.config import to_dict
    from llmctl.core.nn.build import build_model
    from llmctl.core.nn.checkpoint import save_checkpoint
    from llmctl.core.nn.convert import write_hf_dir
    from llmctl.core.tokenizer import load_tokenizer

    cfg = tiny_model_config(load_tokenizer(tok_dir).vocab_size, **kw)
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # non-trivial norms and biases, so a wrong name map cannot pass by accident
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", ".bias")):
                p.add_(0.1 * torch.randn_like(p))
    if fmt == "hf":
        return write_hf_dir(cfg, model.state_dict(), out, tok_dir, source="test")
    save_checkpoint(out, 0, {"model": model.state_dict()}, {"model": to_dict(cfg)}, tokenizer_dir=tok_dir)
    return out


def write_json(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def sft_data(tmp: Path, tok_dir: Path, *flags: str, name: str = "sft", qa=QA, template: str = "chatml",
             seq_length: int = 64) -> Path:
    """`llmctl data sft` over the instruction set (alpaca records); returns the output prefix."""
    from click.testing import CliRunner

    from llmctl.cli.main import build_cli

    inp = write_json(tmp / f"{name}.json", [{"instruction": q, "input": "", "output": a} for q, a in qa])
    prefix = tmp / name / "data"
    args = ["data", "sft", "--input", str(inp), "--tokenizer-name-or-path", str(tok_dir), "--output-prefix",
            str(prefix), "--handler-name", "AlpacaStyleInstructionHandler", "--prompt-type", template,
            "--seq-length", str(seq_length), *flags]
    res = CliRunner().invoke(build_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return prefix


def dpo_data(tmp: Path, tok_dir: Path, name: str = "dpo", template: str = "chatml") -> Path:
    from click.testing import CliRunner

    from llmctl.cli.main import build_cli

    inp = write_json(tmp / f"{name}.json", [{"instruction": p, "input": "", "chosen": c, "rejected": r}
                                            for p, c, r in PAIRS])
    prefix = tmp / name / "data"
    args = ["data", "sft", "--input", str(inp), "--tokenizer-name-or-path", str(tok_dir), "--output-prefix",
            str(prefix), "--handler-name", "AlpacaStylePairwiseHandler", "--prompt-type", template,
            "--seq-length", "64"]
    res = CliRunner().invoke(build_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return prefix


def finetune_cfg(tmp: Path, base: Path, data: Path, method: str, *overrides: str, name: str = "run"):
    from llmctl.finetune.commands import load_finetune_config

    args = [f"task.method={method}", f"task.base={base}", f"data.path={data}", "data.seq_length=64",
            "train.train_iters=4", "train.global_batch_size=4", "train.micro_batch_size=2", "train.lr=1e-3",
            "train.warmup_iters=0", "train.weight_decay=0.0", "eval.iters=0", f"checkpoint.dir={tmp / name / 'ckpt'}",
            f"logging.dir={tmp / name / 'logs'}", "logging.interval=1", "logging.name=run", "task.prompt_type=chatml",
            *overrides]
    return load_finetune_config({}, args)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
