"""toy-copy: an example third-party evaluator. Each question shows a letter and asks the model to repeat it;
the four letters are scored with llmctl-eval's shared logits helper, results aggregated with its helper.

Everything a real benchmark plugin needs is here: register through `register_evaluators`, an extra CLI option
(`--toy-copy-n`), the context's scoring helpers, sharding under torchrun, and a TaskResult back."""

from __future__ import annotations

import click

from llmctl.core.plugins import hookimpl
from llmctl.eval.api import EvalContext, TaskResult
from llmctl.eval.results import accuracy_result

LETTERS = ("A", "B", "C", "D")


class ToyCopy:
    name = "toy-copy"
    description = "toy: repeat the letter shown (example third-party evaluator)"

    def add_options(self) -> list[click.Option]:
        return [click.Option(["--toy-copy-n"], type=click.IntRange(1), default=8, show_default=True,
                             help="toy-copy: number of questions.")]

    def run(self, ctx: EvalContext) -> TaskResult:
        n = ctx.options.get("toy_copy_n") or 8
        questions = ctx.shard([(str(i), LETTERS[i % 4]) for i in range(n)])
        prompts = [ctx.encode(f"Repeat the letter.\nLetter: {letter}\nAnswer:") for _, letter in questions]
        choice_ids = ctx.choice_ids("\nAnswer:", [" " + letter for letter in LETTERS])
        scores = ctx.score_choices(prompts, choice_ids, desc=self.name)
        records = [{"subject": "copy", "id": qid, "answer": letter,
                    "pred": LETTERS[max(range(4), key=s.__getitem__)], "scores": s}
                   for (qid, letter), s in zip(questions, scores)]
        return accuracy_result(self.name, ctx.gather(records), info={"questions": n})


@hookimpl
def register_evaluators(register):
    register("toy-copy", ToyCopy())
