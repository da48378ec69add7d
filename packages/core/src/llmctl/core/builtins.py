"""llmctl-core's built-in plugin: registered through the `llmctl` entry point like any third party.

Its commands are in `llmctl.core.commands`, which imports torch lazily so `llmctl --help` works on a
torch-free data box.
"""

from __future__ import annotations

from .plugins import hookimpl


@hookimpl
def register_commands(cli):
    from .commands import add_commands

    add_commands(cli)


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
    register("wandb", "llmctl.core.train.wandb_sink:WandbSink")  # imports wandb only when a run names it


@hookimpl
def register_callbacks(register):
    from .train.run_record import RunRecord  # torch-free to import

    register("run-record", RunRecord())
