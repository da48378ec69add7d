"""llmctl-core's built-in plugin: registered through the `llmctl` entry point like any third party.

Command modules import torch lazily so `llmctl --help` works on a torch-free data box.
"""

from __future__ import annotations

import json

import click

from .plugins import get_bus, hookimpl


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def plugins_command(as_json: bool) -> None:
    """List every plugin with its distribution, version and what it registered.

    \b
    Example:
      llmctl plugins
      LLMCTL_LOAD_PLUGINS= llmctl plugins   # built-ins only
    """
    rows = get_bus().summary()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['plugin']}  ({row['distribution']} {row['version']})")
        for kind, names in row["registered"].items():
            click.echo(f"    {kind}: {', '.join(names)}")


@hookimpl
def register_commands(cli):
    cli.add_command(plugins_command)
    from .commands_model import convert_group, generate_command

    cli.add_command(convert_group)
    cli.add_command(generate_command)
    from .plot import bench_group, plot_group
    from .train.commands import pretrain_command

    cli.add_command(pretrain_command)
    cli.add_command(plot_group)
    cli.add_command(bench_group)


@hookimpl
def register_models(register):
    from .model_spec import ModelSpec  # torch-free
    from .nn.hf_adapters import ADAPTERS

    for family, adapter in ADAPTERS.items():
        register(family, ModelSpec(family, hf=adapter, mcore="gpt"))


@hookimpl
def register_kernels(register):
    try:
        import torch  # noqa: F401
    except ImportError:
        return  # torch-free install: no kernels, and commands needing torch say how to install it
    from .nn.kernels import builtin_kernels

    builtin_kernels(register)


@hookimpl
def register_tasks(register):
    register("pretrain", "llmctl.core.train.pretrain_task:PretrainTask")


@hookimpl
def register_parallelisms(register):
    register("single", "llmctl.core.train.parallelism:Parallelism")
    register("ddp", "llmctl.core.train.parallelism:DDP")  # llmctl-parallel's ddp (ZeRO-1, hooks) replaces it


@hookimpl
def register_loggers(register):
    from .train.metrics import register_builtin_loggers

    register_builtin_loggers(register)
