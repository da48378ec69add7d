"""The chat templates, reached through the plugin bus (llmctl-data registers them with `register_templates`).

llmctl-finetune imports no other llmctl package: a template comes from the bus, and the functions that render
it (`encode_conversation`, `stop_token_ids`, `get_template` for a user file) come from the module that
defines the template's class, so chat prompts are tokenised by exactly the code that made the training data.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from llmctl.core.errors import UserError


def _renderer(template: Any) -> ModuleType:
    module = importlib.import_module(type(template).__module__)
    for fn in ("encode_conversation", "stop_token_ids"):
        if not callable(getattr(module, fn, None)):
            raise UserError(f"template '{getattr(template, 'name', template)}': its plugin module {module.__name__} "
                            f"has no {fn}(); it cannot be used for chat")
    return module


def get_template(name: str, path: str | None = None) -> Any:
    """The template `name` from the bus, or from a templates.json file `path` (MindSpeed's format)."""
    from llmctl.core.config import did_you_mean
    from llmctl.core.plugins import get_bus

    table = {n: e.value for n, e in get_bus().registry("templates").items()}
    if not table:
        raise UserError("no chat templates registered; install llmctl-data (it registers qwen, chatml, llama3, ...)")
    if path is not None:
        return _renderer(next(iter(table.values()))).get_template(name, path)
    if name not in table:
        raise UserError(f"unknown prompt type '{name}'{did_you_mean(name, table)}; available: {', '.join(sorted(table))}")
    return table[name]


def encode_prompt(tokenizer: Any, template: Any, messages: list[dict], system: str | None) -> list[int]:
    """Token ids of the conversation up to the assistant's next turn (generation prompt appended)."""
    ids, _ = _renderer(template).encode_conversation(tokenizer, template, messages, system=system,
                                                     add_generation_prompt=True)
    return ids


def stop_ids(tokenizer: Any, template: Any) -> list[int]:
    ids = list(_renderer(template).stop_token_ids(tokenizer, template))
    for extra in tokenizer.stop_ids:
        if extra not in ids:
            ids.append(extra)
    return ids
