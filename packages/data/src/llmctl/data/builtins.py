"""llmctl-data's built-in plugin: the `llmctl data` commands, corpus readers, cleaning filters, executors and datasets.

Registered through the `llmctl` entry point like any third-party plugin. Nothing here imports torch, and the
heavy modules are imported only when a hook is called.
"""

from __future__ import annotations

from llmctl.core.plugins import hookimpl


@hookimpl
def register_commands(cli):
    from .cli import data_group
    from .sft.cli import add_sft_commands

    add_sft_commands(data_group)  # `llmctl data sft` / `llmctl data preprocess`
    cli.add_command(data_group)


@hookimpl
def register_readers(register):
    from .readers import BUILTIN_READERS

    for name, reader in BUILTIN_READERS.items():
        register(name, reader, extensions=tuple(reader.extensions))


@hookimpl
def register_filters(register):
    from .filters import BUILTIN_FILTERS

    for name, rule in BUILTIN_FILTERS.items():
        register(name, rule)


@hookimpl
def register_executors(register):
    from .executors import builtin_executors

    for name, executor in builtin_executors().items():
        register(name, executor)


@hookimpl
def register_classifiers(register):
    from .classifiers.meta import BUILTIN_ARCHS

    for name, module in BUILTIN_ARCHS.items():
        register(name, module)


@hookimpl
def register_datasets(register):
    from .gpt_dataset import build_gpt_dataset

    register("gpt", build_gpt_dataset)
    from .sft.datasets import build_dpo_dataset, build_sft_dataset

    register("sft", build_sft_dataset)
    register("dpo", build_dpo_dataset)


@hookimpl
def register_templates(register):
    from .sft.templates import builtin_templates

    for name, template in builtin_templates().items():
        register(name, template)
