"""llmctl-finetune's built-in plugin (registered through the `llmctl` entry point): the `sft` and `dpo` tasks
(torch-free registration: the classes load when a run starts), the driver callback of those tasks (LoRA
adapter export at each checkpoint; at the start of training, their notes and DPO's precomputed reference,
which needs the parallelism the Task API does not give), and the `llmctl finetune` / `llmctl chat` commands."""

from __future__ import annotations

from llmctl.core.plugins import hookimpl


@hookimpl
def register_tasks(register):
    register("sft", "llmctl.finetune.sft:SFTTask")
    register("dpo", "llmctl.finetune.dpo:DPOTask")


class _LazyFinetuneCallbacks:
    """Imports the torch side only when a run calls it (a torch process by then)."""

    def on_train_start(self, trainer):
        from .base import FinetuneTask

        task = getattr(trainer, "task", None)
        if isinstance(task, FinetuneTask):  # subclasses too: a DPO subclass needs its reference precomputed
            task.on_train_start(trainer)

    def on_checkpoint_publish(self, trainer, tmp_dir):
        from .base import AdapterExport

        AdapterExport().on_checkpoint_publish(trainer, tmp_dir)


@hookimpl
def register_callbacks(register):
    register("finetune-run", _LazyFinetuneCallbacks())


@hookimpl
def register_commands(cli):
    from .chat import chat_command
    from .commands import finetune_group

    cli.add_command(finetune_group)
    cli.add_command(chat_command)
