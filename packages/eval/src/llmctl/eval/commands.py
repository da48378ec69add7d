"""`llmctl eval run | list | compare`. Torch is imported only when a run starts, so `llmctl --help` works on a
torch-free box; evaluators' extra options are collected only when `eval run` itself is parsed or helped."""

from __future__ import annotations

import json
from pathlib import Path

import click

from llmctl.core.errors import PluginError, UserError
from llmctl.core.plugins import get_bus


@click.group("eval")
def eval_group() -> None:
    """Evaluate a model: MMLU, CMMLU, C-Eval, perplexity, and evaluators from plugins.

    \b
    Example:
      llmctl eval run --task mmlu --ckpt-dir out/ckpt --data-dir data/mmlu --out-dir out/eval
      llmctl eval list
      llmctl eval compare out/eval_a/results.json out/eval_b/results.json
    """


class _RunCommand(click.Command):
    """Adds every registered evaluator's add_options() to `eval run`, once, when the command is used."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not getattr(self, "_plugin_options_added", False):
            from .api import evaluator_options

            self._plugin_options_added = True
            base = {p.name for p in self.params}
            for name, entry in get_bus().registry("evaluators").items():
                for opt in evaluator_options(entry.value):
                    if opt.name in base:
                        raise PluginError(f"evaluator '{name}' (plugin '{entry.plugin}') adds option "
                                          f"'--{opt.name.replace('_', '-')}', which already exists")
                    base.add(opt.name)
                    self.params.append(opt)
        return super().get_params(ctx)


_BASE = ("task", "ckpt_dir", "lora_dir", "data_dir", "tokenizer", "shots", "mode", "max_new_tokens", "batch_size",
         "limit", "subjects", "split", "out_dir", "device", "dtype", "iteration")


def _split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _data_dirs(values: tuple[str, ...], tasks: list[str]) -> dict[str | None, Path]:
    """`PATH` applies to every task; `task=PATH` to one (e.g. mmlu=data/mmlu ppl=data/val_text_document)."""
    dirs: dict[str | None, Path] = {}
    for v in values:
        task, sep, path = v.partition("=")
        if sep and task in tasks:
            dirs[task] = Path(path)
        elif sep and task and "/" not in task and not Path(v).exists():
            raise UserError(f"--data-dir {v}: '{task}' is not one of the tasks being run ({', '.join(tasks)})")
        else:
            dirs[None] = Path(v)
    return dirs


@eval_group.command("run", cls=_RunCommand)
@click.option("--task", "task", required=True, help="Comma-separated evaluators: mmlu, cmmlu, ceval, ppl, ...")
@click.option("--ckpt-dir", required=True, type=click.Path(path_type=Path),
              help="Native checkpoint (root or iter_N) or HF model dir (config.json + safetensors).")
@click.option("--lora-dir", type=click.Path(path_type=Path), default=None, help="LoRA adapter (PEFT dir or a llmctl LoRA checkpoint) merged into --ckpt-dir's weights.")
@click.option("--data-dir", multiple=True, metavar="[TASK=]PATH",
              help="Benchmark data: PATH for every task, or TASK=PATH per task (repeatable). MMLU/C-Eval: the "
                   "folder with dev/ val/ test/; CMMLU: the one with dev/ test/; ppl: a .bin/.idx prefix, a "
                   ".txt file or a folder of .txt files.")
@click.option("--tokenizer", type=click.Path(path_type=Path), default=None,
              help="Tokenizer dir, when the model dir has none (or to override it).")
@click.option("--shots", type=click.IntRange(0), default=5, show_default=True,
              help="Few-shot examples from the dev split (dropped from the front when the prompt is too long).")
@click.option("--mode", type=click.Choice(["logits", "generate", "cloze"]), default="logits", show_default=True,
              help="logits: compare the next-token scores of the answer letters (official). generate: greedy "
                   "decoding, then extract the letter (rules in docs/evaluators.md). cloze: options hidden, "
                   "each option's text scored as the continuation, per character (for small models).")
@click.option("--max-new-tokens", type=click.IntRange(1), default=64, show_default=True,
              help="Generate mode: tokens to generate per question.")
@click.option("--batch-size", default="auto", show_default=True,
              help="Prompts per forward pass, or 'auto' (sized from memory).")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="At most N questions per subject (ppl: N documents). For smoke tests.")
@click.option("--subjects", default=None, help="Comma-separated subjects (C-Eval also takes 'hard').")
@click.option("--split", default=None, help="Split to score: test (MMLU/CMMLU default), val (C-Eval default), dev.")
@click.option("--out-dir", required=True, type=click.Path(path_type=Path),
              help="Writes results.json, logs/eval_<ts>/<task>.log, predictions/<task>.jsonl.")
@click.option("--device", default=None, help="auto (default: npu > cuda > cpu), cpu, cuda, npu.")
@click.option("--dtype", default="auto", show_default=True, help="auto (fp32 on CPU, bf16 elsewhere), fp32, bf16, fp16.")
@click.option("--iteration", type=int, default=None, help="Native checkpoint iteration (default: latest).")
def run_command(**kw) -> None:
    """Evaluate a checkpoint on one or more tasks.

    Malformed data stops the run with one line naming file and line (exit 2): a CSV row with the wrong
    number of columns, an answer not in A-D, a missing split folder or dev file. A subject whose test file
    has no rows is skipped and listed under skipped_subjects in results.json and the log.

    \b
    Example:
      llmctl eval run --task mmlu --ckpt-dir out/ckpt --data-dir data/mmlu --shots 5 --out-dir out/eval
      llmctl eval run --task mmlu,ceval,ppl --ckpt-dir hf_model --data-dir mmlu=data/mmlu \\
          --data-dir ceval=data/ceval --data-dir ppl=data/corpus_val --mode generate --out-dir out/eval
      torchrun --nproc-per-node 8 -m llmctl.cli eval run --task cmmlu --ckpt-dir ckpt --data-dir data/cmmlu --out-dir out
    """
    from .runner import run_eval

    tasks = _split_list(kw["task"])
    if not tasks:
        raise UserError("--task names no evaluator")
    batch = kw["batch_size"]
    if batch != "auto" and not (str(batch).isdigit() and int(batch) > 0):
        raise UserError(f"--batch-size must be 'auto' or a positive integer, got {batch!r}")
    options = {k: v for k, v in kw.items() if k not in _BASE}
    results, path = run_eval(
        tasks, kw["ckpt_dir"], kw["out_dir"], data_dirs=_data_dirs(kw["data_dir"], tasks),
        tokenizer_dir=kw["tokenizer"], device=kw["device"], dtype=kw["dtype"], iteration=kw["iteration"],
        lora_dir=kw["lora_dir"],
        shots=kw["shots"], mode=kw["mode"], max_new_tokens=kw["max_new_tokens"],
        batch_size=None if batch == "auto" else int(batch), limit=kw["limit"],
        subjects=_split_list(kw["subjects"]) or None, split=kw["split"], options=options)
    if path is None:
        return  # not rank 0
    for r in results:
        shown = "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={'-' if v is None else v}"
                          for k, v in r.metrics.items())
        click.echo(f"{r.task}: {shown}")
    click.echo(f"results: {path}")


@eval_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def list_command(as_json: bool) -> None:
    """List the registered evaluators and the plugin/distribution each comes from.

    \b
    Example:
      llmctl eval list
    """
    bus = get_bus()
    rows = []
    for name, entry in sorted(bus.registry("evaluators").items()):
        dist, version = bus.dists.get(entry.plugin, ("?", "?"))
        rows.append({"name": name, "description": getattr(entry.value, "description", ""),
                     "plugin": entry.plugin, "distribution": dist, "version": version})
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for r in rows:
        click.echo(f"{r['name']:<12} {r['distribution']} {r['version']} (plugin {r['plugin']})  {r['description']}")


@eval_group.command("compare")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
def compare_command(a: Path, b: Path) -> None:
    """Print a diff table of two results.json files (overall, categories, subjects; B - A).

    \b
    Example:
      llmctl eval compare out/eval_base/results.json out/eval_sft/results.json
    """
    from .results import compare_text, load_results

    click.echo(compare_text(load_results(a), load_results(b), str(a), str(b)), nl=False)
