"""`llmctl quickstart`: lab 1's whole pipeline at toy scale on a CPU, in minutes, on data it generates.

Every stage is a real `llmctl` command invoked through the same click group a user types into (so the
quickstart needs the plugins that provide them: llmctl-data, llmctl-core[torch], llmctl-eval); the summary
is read back from the files those commands wrote, as a user would.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shlex
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import click
import yaml

from llmctl.core import deps
from llmctl.core.errors import UserError
from llmctl.core.io import write_json_atomic, write_text_atomic
from llmctl.core.plugins import lookup

# A small llama (~0.9M params) that learns the toy corpus in about two CPU minutes.
MODEL = {"preset": "tiny", "hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2,
         "ffn_hidden_size": 352, "max_seq_len": 256}
SEQ_LENGTH = 128
VOCAB_SIZE = 1024
TRAIN_ITERS = 600
PROMPTS = ("The capital of France is", "日本的首都是")
# What the stages need beyond llmctl-core and llmctl-cli, checked before stage 1 (a missing one would
# otherwise surface minutes in, at the stage that imports it).
NEEDS_MODULES = ("torch", "tokenizers", "transformers", "matplotlib")
NEEDS_COMMANDS = {"data": "llmctl-data", "eval": "llmctl-eval"}  # command -> the distribution providing it


class Pipeline:
    """Runs `llmctl` sub-commands in-process, one numbered stage at a time, timing each."""

    def __init__(self, root: click.Group):
        self.root, self.stage = root, 0
        self.timings: list[tuple[str, float]] = []

    def run(self, title: str, *args: str, capture: bool = False) -> str:
        self.stage += 1
        argv = [str(a) for a in args]
        click.secho(f"\n[{self.stage}] {title}", bold=True, err=True)
        click.echo(f"    $ llmctl {shlex.join(argv)}", err=True)
        start = time.perf_counter()
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer) if capture else contextlib.nullcontext():
                with self.root.make_context("llmctl", argv) as ctx:
                    self.root.invoke(ctx)
        except click.exceptions.Exit as e:
            if e.exit_code:
                raise UserError(f"quickstart stage {self.stage} ({title}) failed with exit code {e.exit_code}")
        except click.ClickException as e:
            raise UserError(f"quickstart stage {self.stage} ({title}): {e.format_message()}") from None
        self.timings.append((title, time.perf_counter() - start))
        return buffer.getvalue()


def unigram_baseline(prefix: Path, seq_length: int, train_tokens: int, val_tokens: int) -> float:
    """Cross-entropy (nats/token) on the val split of the best context-free model fit on the train split:
    the loss of a model that learned token frequencies only. Val loss must go clearly below it."""
    build = lookup("datasets", "gpt")

    def tokens(split: str, count: int):
        ds = build(str(prefix), seq_len=seq_length, num_samples=max(count // (seq_length + 1), 1), seed=0,
                   split=split)
        for sample in ds.iter_from(0):
            yield from sample["tokens"][1:].tolist()

    counts = Counter(tokens("train", train_tokens))
    total, vocab = sum(counts.values()), max(counts) + 1
    nll, n = 0.0, 0
    for t in tokens("val", val_tokens):
        nll -= math.log((counts.get(t, 0) + 1) / (total + vocab))  # add-one smoothing for unseen tokens
        n += 1
    return nll / max(n, 1)


def last_record(log_path: Path, key: str) -> dict | None:
    found = None
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get(key) is not None:
            found = rec
    return found


@click.command("quickstart")
@click.option("--out-dir", default="llmctl_quickstart", show_default=True, type=click.Path(file_okay=False),
              help="Where every stage writes (data, tokenizer, checkpoints, logs, eval, plots, summary.md).")
@click.option("--train-iters", default=TRAIN_ITERS, show_default=True, type=click.IntRange(min=4),
              help="Pretraining steps (halved, checkpointed, then resumed).")
@click.option("--seed", default=1234, show_default=True, type=int)
@click.pass_context
def quickstart_command(ctx: click.Context, out_dir: str, train_iters: int, seed: int) -> None:
    """Run lab 1 end to end at toy scale on CPU: generate a bilingual corpus, clean, dedup, train a
    tokenizer, tokenize to Megatron .bin/.idx, pretrain a small llama (stop halfway, resume), evaluate on a
    generated multiple-choice set in MMLU layout, generate, plot, and write summary.md.

    \b
    Example:
      llmctl quickstart                       # ./llmctl_quickstart, a few minutes on 2 cores
      llmctl quickstart --out-dir /tmp/qs --train-iters 200
    """
    root = ctx.find_root().command
    check_dependencies(root)
    out = Path(out_dir).resolve()
    _fresh_out_dir(out)
    data, tok, ckpt, logs = out / "data", out / "tokenizer", out / "checkpoints", out / "logs"
    prefix = data / "tokens" / "toy"
    p = Pipeline(root)
    started = time.perf_counter()

    p.run("generate a bilingual toy corpus and a multiple-choice set",
          "data", "synth", "--out-dir", data / "raw", "--seed", seed)
    p.run("clean: rule filters + PII masking", "data", "clean", "--input", data / "raw" / "corpus.jsonl",
          "--output", data / "clean")
    p.run("dedup: exact + MinHash near-duplicates", "data", "dedup", "--input", data / "clean",
          "--output", data / "dedup")
    p.run("train a byte-level BPE tokenizer", "data", "train-tokenizer", "--input", data / "dedup",
          "--output-dir", tok, "--vocab-size", VOCAB_SIZE, "--type", "hf-bytelevel-bpe")
    p.run("tokenize to Megatron .bin/.idx (train/val)", "data", "tokenize", "--input", data / "dedup",
          "--tokenizer", tok, "--output-prefix", prefix, "--val-ratio", "0.05", "--append-eod")

    config = {
        "model": dict(MODEL),
        "data": {"path": str(prefix), "seq_length": SEQ_LENGTH, "tokenizer": str(tok)},
        "train": {"train_iters": train_iters, "global_batch_size": 16, "micro_batch_size": 16, "lr": 3e-3,
                  "min_lr": 3e-4, "schedule": "cosine", "warmup_fraction": 0.05, "weight_decay": 0.1,
                  "clip_grad": 1.0, "seed": seed, "dtype": "fp32", "device": "cpu"},
        "eval": {"interval": max(train_iters // 6, 1), "iters": 4},
        "checkpoint": {"dir": str(ckpt), "interval": max(train_iters // 2, 1), "keep": 2},
        "logging": {"interval": 10, "dir": str(logs), "name": "quickstart"},
    }
    cfg_path = out / "pretrain.yaml"
    write_text_atomic(cfg_path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    half = max(train_iters // 2, 1)
    p.run(f"pretrain steps 1-{half}, then save and stop", "pretrain", "-c", cfg_path, "--stop-at-step", half)
    p.run(f"resume from the checkpoint at step {half} and train to {train_iters}", "pretrain", "-c", cfg_path,
          "--resume", "auto")

    mc_dir = data / "raw" / "mc"
    p.run("evaluate on the generated multiple-choice set (MMLU layout, cloze formulation)", "eval", "run",
          "--task", "mmlu", "--ckpt-dir", ckpt, "--data-dir", mc_dir, "--shots", "0", "--mode", "cloze",
          "--out-dir", out / "eval")
    gen_args = ["generate", "--ckpt-dir", ckpt, "--max-new-tokens", "24", "--json"]
    for prompt in PROMPTS:
        gen_args += ["--prompt", prompt]
    samples = [json.loads(line) for line in p.run("generate samples", *gen_args, capture=True).splitlines()
               if line.startswith("{")]
    for s in samples:
        click.echo(f"    {s['prompt']!r} -> {s['completion']!r}", err=True)
    log_path = logs / "quickstart.jsonl"
    p.run("plot loss, learning rate and throughput", "plot", "curves", log_path, "--output",
          out / "plots" / "curves.png", "--smooth-window", "3", "--title", "llmctl quickstart")

    sizes = {split: json.loads(p.run(f"inspect the {split} split", "data", "inspect", f"{prefix}_{split}", "--json",
                                     capture=True))["tokens"] for split in ("train", "val")}
    baseline = unigram_baseline(prefix, SEQ_LENGTH, sizes["train"], sizes["val"])
    val = last_record(log_path, "val_loss")
    results = json.loads((out / "eval" / "results.json").read_text())
    mc = results["tasks"]["mmlu"]["metrics"]
    summary = render_summary(out, baseline, val, mc, samples, p.timings, time.perf_counter() - started)
    write_text_atomic(out / "summary.md", summary)
    write_json_atomic(out / "summary.json", {
        "val_loss": val["val_loss"] if val else None, "val_step": val["step"] if val else None,
        "unigram_baseline": baseline, "mc_accuracy": mc.get("acc"), "mc_questions": mc.get("total"),
        "chance": 0.25, "samples": samples, "seconds": dict(p.timings)})
    click.echo(summary)
    if val is None or not val["val_loss"] < baseline:
        raise UserError(f"quickstart: val loss {val and val['val_loss']} did not beat the unigram baseline "
                        f"{baseline:.3f}; see {out / 'summary.md'}")


def check_dependencies(root: click.Group) -> None:
    """Exit 2 with one line naming everything missing (modules and plugin distributions), before any work."""
    names = deps.missing(NEEDS_MODULES)
    names += [dist for cmd, dist in NEEDS_COMMANDS.items() if cmd not in root.commands]
    if names:
        raise UserError(deps.needs_line("llmctl quickstart", names))


def _fresh_out_dir(out: Path) -> None:
    """Start from an empty --out-dir: a previous quickstart's is replaced, anything else is left alone."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / "pretrain.yaml").is_file():
        raise UserError(f"--out-dir {out} exists and is not a quickstart directory; choose an empty or new one")
    click.echo(f"replacing the previous quickstart run in {out}", err=True)
    shutil.rmtree(out)


def render_summary(out: Path, baseline: float, val: dict | None, mc: dict, samples: list[dict],
                   timings: list[tuple[str, float]], total_s: float) -> str:
    val_loss = val["val_loss"] if val else float("nan")
    acc = mc.get("acc", float("nan"))
    lines = [
        "# llmctl quickstart summary", "",
        "| metric | value | reference |", "|---|---|---|",
        f"| validation loss (step {val['step'] if val else '?'}) | {val_loss:.3f} | unigram baseline {baseline:.3f} "
        f"({'below' if val_loss < baseline else 'NOT below'}) |",
        f"| multiple-choice accuracy, cloze ({mc.get('total', '?')} questions) | {acc:.3f} | chance 0.250 "
        f"({'above' if acc > 0.25 else 'NOT above'}) |",
        "", "## Samples", "",
    ]
    for s in samples:
        lines.append(f"- `{s['prompt']}` → `{s['completion']}`")
    lines += ["", "## Stages", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {title} | {secs:.1f} |" for title, secs in timings]
    lines += [f"| **total** | {total_s:.1f} |", "", "## Where things are", ""]
    for name, rel in [("corpus + MC set", "data/raw"), ("tokenizer", "tokenizer"), ("tokens", "data/tokens"),
                      ("checkpoints", "checkpoints"), ("logs", "logs"), ("eval results", "eval/results.json"),
                      ("plots", "plots/curves.png"), ("pretrain config", "pretrain.yaml")]:
        lines.append(f"- {name}: `{out / rel}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(quickstart_command())
