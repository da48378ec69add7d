"""llmctl-eval's built-in plugin, registered through the `llmctl` entry point exactly like a third party's:
the `llmctl eval` command group and the mmlu, cmmlu, ceval and ppl evaluators. Nothing here imports torch."""

from __future__ import annotations

from llmctl.core.plugins import hookimpl


@hookimpl
def register_commands(cli):
    from .commands import eval_group

    cli.add_command(eval_group)


@hookimpl
def register_evaluators(register):
    from .runner import builtin_evaluators

    for evaluator in builtin_evaluators():
        register(evaluator.name, evaluator)
