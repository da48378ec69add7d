"""llmctl-finetune's built-in plugin (registered through the `llmctl` entry point): the `sft` and `dpo` tasks
(torch-free registration: the classes load when a run starts), the LoRA adapter export callback, and the
`llmctl finetune` / `llmctl chat` commands."""

from __future__ import annotations

from llmctl.core.plugins import hookimpl


@hookimpl
def register_tasks(register):
    register("sft", "llmctl.finetune.sft:SFTTask")
    register("dpo", "llmctl.finetune.dpo:DPOTask")


class _LazyAdapterExport:
    """Imports the torch side only when a checkpoint is published."""

    def on_checkpoint_publish(self, trainer, tmp_dir):
        from .base import AdapterExport

        AdapterExport().on_checkpoint_publish(trainer, tmp_dir)


@hookimpl
def register_callbacks(register):
    register("lora-adapter-export", _LazyAdapterExport())


@hookimpl
def register_commands(cli):
    from .chat import chat_command
    from .commands import finetune_group

    cli.add_command(finetune_group)
    cli.add_command(chat_command)
