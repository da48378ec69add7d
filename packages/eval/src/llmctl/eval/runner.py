"""Run evaluators: the multiple-choice benchmarks (MMLU, CMMLU, C-Eval) and the loop behind `llmctl eval run`
that loads the model once, runs each task with an EvalContext, and writes the results.

Multiple choice, step by step: read the subject's test split (and `--shots` examples from dev), build each
prompt in the official wording with as many shots as fit, then either score the answer letters' next-token
logits (scoring.score_choices, which reuses each subject's shared few-shot prefix through the KV cache) or
generate greedily and extract the letter. Under torchrun every rank takes every world_size-th question of each
subject and rank 0 gathers and writes.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from llmctl.core.errors import PluginError, UserError
from llmctl.core.io import write_json_atomic
from llmctl.core.progress import progress

from .api import EvalContext, TaskResult
from .loaders import LETTERS, Benchmark
from .prompts import FORMATS, ClozeFormat, PromptFormat, fit_prompt
from .results import accuracy_result, write_results
from .scoring import continuation_ids, extract_letter, score_continuations

MODES = ("logits", "generate", "cloze")


class MultipleChoiceEvaluator:
    """A four-choice benchmark in MMLU/CMMLU/C-Eval layout, scored the official way."""

    def __init__(self, benchmark: Benchmark, fmt: PromptFormat, description: str):
        self.benchmark, self.fmt = benchmark, fmt
        self.name, self.description = benchmark.name, description

    def run(self, ctx: EvalContext) -> TaskResult:
        bench = self.benchmark
        if ctx.mode not in MODES:
            raise UserError(f"unknown --mode '{ctx.mode}'; modes: {', '.join(MODES)}")
        data_dir = bench.resolve_dir(ctx.require_data_dir(self.name))
        split = ctx.split or bench.default_split
        subjects = bench.select(bench.subjects(data_dir, split), ctx.subjects)
        if not subjects:
            raise UserError(f"{data_dir / split}: no {bench.name} subject files "
                            f"({bench.file_pattern.replace('{split}', split)})")
        if ctx.shots:
            if split == bench.shots_split:
                raise UserError(f"--split {split} is where the few-shot examples come from; score it with --shots 0")
            bench.split_dir(data_dir, bench.shots_split)  # a clear error if dev/ is missing altogether
        fmt = ClozeFormat.of(self.fmt) if ctx.mode == "cloze" else self.fmt
        items, files, skipped = self._prompts(ctx, fmt, data_dir, split, subjects)
        if ctx.mode == "cloze":
            preds, extra, info = self._predict_cloze(ctx, fmt, items)
        else:
            preds, extra, info = self._predict(ctx, [f.ids for _, _, f in items],
                                               groups=[(q.subject, f.shots) for _, q, f in items])
        records = [{"order": order, "subject": q.subject, "id": q.id, "answer": q.answer, "pred": pred,
                    "correct": None if q.answer is None else pred == q.answer, "shots": f.shots,
                    "truncated": f.truncated, **x}
                   for (order, q, f), pred, x in zip(items, preds, extra)]
        records = sorted(ctx.gather(records), key=lambda r: r["order"])  # every rank's, in file order
        for r in records:
            del r["order"]
        info.update(split=split, mode=ctx.mode, shots=ctx.shots, truncated=sum(r["truncated"] for r in records),
                    fewer_shots=sum(r["shots"] < ctx.shots for r in records), skipped_subjects=skipped)
        result = accuracy_result(self.name, records, bench.categories, [str(f) for f in files], info,
                                 bench.category_order)
        if result.metrics["unlabeled"] and ctx.rank == 0:
            result.info["submission"] = str(_write_submission(ctx.out_dir, self.name, records))
        return result

    def _prompts(self, ctx: EvalContext, fmt: PromptFormat, data_dir: Path, split: str, subjects: list[str]):
        """([((subject#, question#), Question, FittedPrompt)] for this rank, files read, skipped subjects)."""
        bench = self.benchmark
        reserve = {"generate": ctx.max_new_tokens, "cloze": CLOZE_RESERVE}.get(ctx.mode, 0)
        budget = ctx.loaded.config.max_seq_len - reserve
        if budget < 1:
            raise UserError(f"--max-new-tokens {ctx.max_new_tokens} leaves no room for a prompt in "
                            f"max_seq_len {ctx.loaded.config.max_seq_len}")
        items, files, skipped = [], [], {}
        for s_index, subject in enumerate(progress(subjects, desc=f"{self.name} prompts", unit="subject")):
            test_path = bench.path(data_dir, split, subject)
            questions = bench.read(test_path, subject)
            files.append(test_path)
            if not questions:
                skipped[subject] = "no questions"
                continue
            shots = []
            if ctx.shots:
                dev_path = bench.path(data_dir, bench.shots_split, subject)
                if not dev_path.is_file():
                    raise UserError(f"{dev_path}: not found; --shots {ctx.shots} takes examples from the "
                                    f"{bench.shots_split} split (or use --shots 0)")
                shots = bench.read(dev_path, subject)[:ctx.shots]
                files.append(dev_path)
                unlabeled = next((q for q in shots if q.answer is None), None)
                if unlabeled is not None:
                    raise UserError(f"{unlabeled.where}: few-shot example has no answer")
            name = bench.display_name(subject)
            numbered = list(enumerate(questions[:ctx.limit] if ctx.limit else questions))
            for n, q in ctx.shard(numbered):
                items.append(((s_index, n), q, fit_prompt(ctx.encode, fmt, name, shots, q, budget)))
        return items, files, skipped

    def _predict(self, ctx: EvalContext, prompts: list[list[int]], groups: list[tuple[str, int]]):
        """(letter or None per prompt, extra record fields, info) in logits or generate mode. `groups`:
        prompts with the same subject and shot count share their few-shot prefix."""
        if ctx.mode == "generate":
            texts = ctx.generate(prompts, desc=self.name)
            return [extract_letter(t) for t in texts], [{"output": t} for t in texts], {}
        fmt = self.fmt
        letter_ids = ctx.choice_ids(fmt.answer_prefix, [fmt.answer_sep + letter for letter in LETTERS])
        scores = ctx.score_choices(prompts, letter_ids, groups=groups, desc=self.name)
        preds = [LETTERS[max(range(len(LETTERS)), key=s.__getitem__)] for s in scores]
        return preds, [{"scores": s} for s in scores], {"choice_token_ids": dict(zip(LETTERS, letter_ids))}


    def _predict_cloze(self, ctx: EvalContext, fmt: ClozeFormat, items: list):
        """Cloze mode: the option whose text is most likely after the prompt, per character (lm-eval's
        acc_norm), so a longer option is not penalised for having more tokens."""
        requests, lengths = [], []
        for _, q, f in items:
            for cont in fmt.continuations(q):  # split as it would be after the answer prefix
                requests.append((f.ids, continuation_ids(ctx.tokenizer, fmt.answer_prefix, cont)[:CLOZE_RESERVE]))
                lengths.append(max(len(cont.strip()), 1))
        logps = score_continuations(ctx.model, requests, batch_size=ctx.batch_size, desc=self.name)
        n = len(LETTERS)
        scores = [[logps[k * n + c] / lengths[k * n + c] for c in range(n)] for k in range(len(items))]
        preds = [LETTERS[max(range(n), key=s.__getitem__)] for s in scores]
        return preds, [{"scores": s} for s in scores], {"normalisation": "per character"}


#: Tokens kept free after a cloze prompt for the longest option text.
CLOZE_RESERVE = 32


def _write_submission(out_dir: Path, task: str, records: list[dict[str, Any]]) -> Path:
    """Unlabeled splits (C-Eval test): predictions in the official submission layout {subject: {id: letter}}."""
    sub: dict[str, dict[str, str | None]] = {}
    for r in records:
        if r["answer"] is None:
            sub.setdefault(r["subject"], {})[r["id"]] = r["pred"]
    path = Path(out_dir) / f"{task}_submission.json"
    write_json_atomic(path, sub)
    return path


def builtin_evaluators() -> list[Any]:
    from .loaders import BENCHMARKS
    from .ppl import PerplexityEvaluator

    about = {"mmlu": "MMLU (hendrycks/test CSVs), 57 subjects, 4 categories; official prompt",
             "cmmlu": "CMMLU (haonan-li/CMMLU CSVs), 67 subjects, 5 categories; official prompt",
             "ceval": "C-Eval (ceval-exam CSVs), 52 subjects, 4 categories + Hard; official prompt; default split val"}
    return [*(MultipleChoiceEvaluator(b, FORMATS[n], about[n]) for n, b in BENCHMARKS.items()),
            PerplexityEvaluator()]


# ---- the `llmctl eval run` loop ----------------------------------------------------------------------------
def _init_distributed(device_pref: str | None):
    """Join torchrun's process group when launched by it; returns (device, started_group)."""
    import torch.distributed as dist

    from llmctl.core.nn.device import device_type, dist_backend, pick_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    started = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=dist_backend(device_type(device_pref)))
        started = True
    return pick_device(device_pref), started


def run_eval(tasks: list[str], ckpt_dir: str | Path, out_dir: str | Path, *, data_dirs: dict[str | None, Path],
             tokenizer_dir: str | Path | None = None, device: str | None = None, dtype: str = "auto",
             iteration: int | None = None, lora_dir: str | Path | None = None,
             **settings: Any) -> tuple[list[TaskResult], Path | None]:
    """Load the model once (a LoRA adapter in `lora_dir` merged into it), run each task, write results (rank 0).
    `settings` are EvalContext fields (shots, mode, max_new_tokens, batch_size, limit, subjects, split,
    options). Returns (results, results.json path)."""
    from llmctl.core.errors import require_torch
    from llmctl.core.plugins import get_bus, lookup

    torch = require_torch("llmctl eval run")
    import torch.distributed as dist

    from llmctl.core.nn.build import parse_dtype
    from llmctl.core.nn.loading import load_model
    from llmctl.core.tokenizer import load_tokenizer

    evaluators = [lookup("evaluators", t) for t in tasks]
    started = _dt.datetime.now().astimezone()
    dev, own_group = _init_distributed(device)
    try:
        torch_dtype = (torch.float32 if dev.type == "cpu" else torch.bfloat16) if dtype == "auto" else parse_dtype(dtype)
        loaded = load_model(ckpt_dir, device=dev, dtype=torch_dtype, iteration=iteration, lora_dir=lora_dir)
        if tokenizer_dir is not None:
            loaded.tokenizer = load_tokenizer(tokenizer_dir)
        results = []
        for task, ev in zip(tasks, evaluators):
            ctx = EvalContext(loaded, Path(out_dir), data_dir=data_dirs.get(task, data_dirs.get(None)),
                              iteration=iteration, **settings)
            result = ev.run(ctx)
            if not isinstance(result, TaskResult):
                plugin = get_bus().registry("evaluators")[task].plugin
                raise PluginError(f"evaluator '{task}' (plugin '{plugin}') returned {type(result).__name__}, "
                                  "not a TaskResult")
            results.append(result)
        path = None
        if not dist.is_initialized() or dist.get_rank() == 0:
            recorded = {k: v for k, v in settings.items() if k != "options"}
            recorded.update(tasks=tasks, dtype=str(torch_dtype).replace("torch.", ""), device=str(dev),
                            world_size=dist.get_world_size() if dist.is_initialized() else 1,
                            options=settings.get("options", {}),
                            data_dirs={k or "*": str(v) for k, v in data_dirs.items()})
            if lora_dir is not None:
                recorded["lora_dir"] = str(lora_dir)
            path = write_results(out_dir, results, loaded=loaded, settings=recorded, started=started,
                                 iteration=iteration)
        return results, path
    finally:
        if own_group:
            dist.destroy_process_group()
