"""llmctl-finetune's built-in plugin (registered through the `llmctl` entry point)."""

from llmctl.core.plugins import hookimpl  # noqa: F401
