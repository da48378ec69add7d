"""Dataset handlers, named as in MindSpeed-LLM: turn one raw record into a conversation the template renders.

Why handlers and `--map-keys`: instruction sets spell their columns differently (`instruction/input/output`,
the course's `zh_instruction/zh_input/zh_output`, ShareGPT's `conversations`), and MindSpeed users already
describe theirs with `--handler-name` + `--map-keys '{"prompt": "zh_instruction", ...}'`. The same spellings work
here. A map-key must be one this handler knows and its column must exist; anything else is a UserError naming
the key, and a bad record (no response, no `rejected`, turns out of order) one naming `file:line`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from llmctl.core.errors import UserError

from .templates import ASSISTANT, FUNCTION, OBSERVATION, SYSTEM, USER, check_roles

SHAREGPT_TAGS = {  # MindSpeed/LLaMA-Factory defaults; --map-keys '{"tags": {...}}' overrides them
    "role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
    "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system",
}
# Spellings accepted whatever the tags say: OpenAI-style role/content messages.
_ROLE_ALIASES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT, "system": SYSTEM,
                 "observation": OBSERVATION, "tool": OBSERVATION, "function_call": FUNCTION, "function": FUNCTION}


@dataclasses.dataclass
class Example:
    """An instruction sample: alternating user/assistant messages ending with a (non-empty) assistant turn."""

    messages: list[dict]
    system: str | None = None


@dataclasses.dataclass
class PairExample:
    """A preference sample: prompt messages ending with a user turn, and two candidate answers."""

    prompt: list[dict]
    chosen: str
    rejected: str
    system: str | None = None


class EmptyResponse(UserError):
    """A record whose (chosen/rejected) response is empty: an error unless --skip-empty counts and skips it."""


class Handler:
    """Base: column mapping and checks shared by every handler."""

    name = ""
    pairwise = False
    keys: tuple[str, ...] = ()
    defaults: dict[str, str] = {}
    optional: tuple[str, ...] = ()  # keys whose default column may be absent

    def __init__(self, map_keys: dict | None = None):
        from llmctl.core.config import did_you_mean

        map_keys = dict(map_keys or {})
        self.map_keys = map_keys
        for key, value in map_keys.items():
            if key not in self.keys:
                raise UserError(f"--map-keys: '{key}' is not a key of {self.name}{did_you_mean(key, self.keys)}; "
                                f"keys: {', '.join(self.keys)}")
            if key == "tags":
                if not isinstance(value, dict) or any(t not in SHAREGPT_TAGS for t in value):
                    raise UserError(f"--map-keys tags: expected an object with keys {', '.join(SHAREGPT_TAGS)}")
            elif not isinstance(value, str) or not value:
                raise UserError(f"--map-keys {key}: the column name must be a non-empty string, got {value!r}")
        self.explicit = {k: v for k, v in map_keys.items() if k != "tags"}
        self.columns = {**self.defaults, **self.explicit}
        self.tags = {**SHAREGPT_TAGS, **map_keys.get("tags", {})}

    def check_columns(self, record: dict, where: str) -> None:
        """Every column named by --map-keys exists (checked on each file's first record)."""
        for key, col in self.explicit.items():
            if col not in record:
                raise UserError(f"{where}: --map-keys {key}={col!r}: no such column "
                                f"(columns: {', '.join(map(str, record)) or 'none'})")

    def _get(self, record: dict, key: str, where: str) -> Any:
        col = self.columns.get(key)
        if col is None:
            return None
        if col not in record:
            if key in self.optional and key not in self.explicit:
                return None
            raise UserError(f"{where}: no column '{col}' (the {key}; columns: {', '.join(map(str, record))})")
        return record[col]

    def _text(self, value: Any, key: str, where: str, required: bool = False) -> str:
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise UserError(f"{where}: {key} ({self.columns.get(key)}) must be a string, got {type(value).__name__}")
        if required and not value.strip():
            what = "rejected response" if key == "rejected" else "response"
            raise EmptyResponse(f"{where}: empty {what} ('{self.columns.get(key)}'); "
                                "--skip-empty counts and skips such records")
        return value

    def convert(self, record: dict, where: str) -> Example | PairExample:
        raise NotImplementedError


class AlpacaStyleInstructionHandler(Handler):
    """`instruction`, `input`, `output` (+ `history` [[q, a], ...], `system`); user turn = prompt "\\n" query."""

    name = "AlpacaStyleInstructionHandler"
    keys = ("prompt", "query", "response", "history", "system")
    defaults = {"prompt": "instruction", "query": "input", "response": "output", "history": "history",
                "system": "system"}
    optional = ("query", "history", "system")

    def _prompt(self, record: dict, where: str) -> list[dict]:
        msgs: list[dict] = []
        history = self._get(record, "history", where)
        if history:
            if not isinstance(history, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in history):
                raise UserError(f"{where}: history must be a list of [query, response] pairs")
            for q, a in history:
                msgs += [{"role": USER, "content": str(q)}, {"role": ASSISTANT, "content": str(a)}]
        parts = [self._text(self._get(record, k, where), k, where) for k in ("prompt", "query")]
        msgs.append({"role": USER, "content": "\n".join(p for p in parts if p)})
        return msgs

    def _system(self, record: dict, where: str) -> str | None:
        return self._text(self._get(record, "system", where), "system", where) or None

    def convert(self, record: dict, where: str) -> Example:
        response = self._text(self._get(record, "response", where), "response", where, required=True)
        msgs = self._prompt(record, where) + [{"role": ASSISTANT, "content": response}]
        return Example(msgs, self._system(record, where))


class AlpacaStylePairwiseHandler(AlpacaStyleInstructionHandler):
    """Alpaca prompt columns plus `chosen` and `rejected` response strings."""

    name = "AlpacaStylePairwiseHandler"
    pairwise = True
    keys = ("prompt", "query", "chosen", "rejected", "history", "system")
    defaults = {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected",
                "history": "history", "system": "system"}

    def convert(self, record: dict, where: str) -> PairExample:
        chosen, rejected = _pair(self, record, where)
        return PairExample(self._prompt(record, where), chosen, rejected, self._system(record, where))


def _pair(h: Handler, record: dict, where: str) -> tuple[str, str]:
    out = []
    for key in ("chosen", "rejected"):
        col = h.columns[key]
        if col not in record or record[col] is None:
            raise UserError(f"{where}: pairwise record without '{col}'")
        value = record[col]
        if isinstance(value, dict):  # ShareGPT-style message
            value = value.get(h.tags["content_tag"], value.get("content"))
        out.append(h._text(value, key, where, required=True))
    return out[0], out[1]


class SharegptStyleInstructionHandler(Handler):
    """`conversations`: [{from, value}] (or [{role, content}]), optionally led by a system turn, plus `system`."""

    name = "SharegptStyleInstructionHandler"
    keys = ("messages", "system", "tags")
    defaults = {"messages": "conversations", "system": "system"}
    optional = ("system",)

    def _messages(self, record: dict, where: str) -> tuple[list[dict], str | None]:
        raw = self._get(record, "messages", where)
        if not isinstance(raw, list) or not raw:
            raise UserError(f"{where}: '{self.columns['messages']}' must be a non-empty list of messages")
        role_tag, content_tag = self.tags["role_tag"], self.tags["content_tag"]
        names = {self.tags[f"{r}_tag"]: role for r, role in
                 (("user", USER), ("assistant", ASSISTANT), ("observation", OBSERVATION),
                  ("function", FUNCTION), ("system", SYSTEM))}
        msgs = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict):
                raise UserError(f"{where}: message {i + 1} is {type(m).__name__}, expected an object")
            tag = m.get(role_tag, m.get("role"))
            role = names.get(tag) or _ROLE_ALIASES.get(tag)
            if role is None:
                raise UserError(f"{where}: message {i + 1} has unknown role {json.dumps(tag)}")
            content = m.get(content_tag, m.get("content"))
            if not isinstance(content, str):
                raise UserError(f"{where}: message {i + 1} ({tag}) has no text '{content_tag}'")
            msgs.append({"role": role, "content": content})
        system = self._text(self._get(record, "system", where), "system", where) or None
        if msgs[0]["role"] == SYSTEM:
            system = msgs.pop(0)["content"] if system is None else system
        try:
            check_roles(msgs)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        return msgs, system

    def convert(self, record: dict, where: str) -> Example:
        msgs, system = self._messages(record, where)
        if msgs[-1]["role"] not in (ASSISTANT, FUNCTION):
            raise UserError(f"{where}: the conversation ends with a {msgs[-1]['role']} turn; no response to train")
        if not msgs[-1]["content"].strip():
            raise EmptyResponse(f"{where}: empty response (the last assistant turn); "
                                "--skip-empty counts and skips such records")
        return Example(msgs, system)


class SharegptStylePairwiseHandler(SharegptStyleInstructionHandler):
    """ShareGPT prompt conversation (ending with a user turn) plus `chosen` and `rejected` (strings or messages)."""

    name = "SharegptStylePairwiseHandler"
    pairwise = True
    keys = ("messages", "system", "tags", "chosen", "rejected")
    defaults = {"messages": "conversations", "system": "system", "chosen": "chosen", "rejected": "rejected"}

    def convert(self, record: dict, where: str) -> PairExample:
        msgs, system = self._messages(record, where)
        if msgs[-1]["role"] not in (USER, OBSERVATION):
            raise UserError(f"{where}: a pairwise prompt must end with a user turn, got {msgs[-1]['role']}")
        chosen, rejected = _pair(self, record, where)
        return PairExample(msgs, chosen, rejected, system)


HANDLERS: dict[str, type[Handler]] = {
    h.name: h for h in (AlpacaStyleInstructionHandler, SharegptStyleInstructionHandler,
                        AlpacaStylePairwiseHandler, SharegptStylePairwiseHandler)
}


def get_handler(name: str, map_keys: dict | str | None = None) -> Handler:
    """The handler called `name`, configured by `map_keys` (a dict or its JSON text)."""
    from llmctl.core.config import did_you_mean

    if name not in HANDLERS:
        raise UserError(f"unknown --handler-name '{name}'{did_you_mean(name, HANDLERS)}; "
                        f"available: {', '.join(HANDLERS)}")
    if isinstance(map_keys, str):
        try:
            map_keys = json.loads(map_keys)
        except json.JSONDecodeError as e:
            raise UserError(f"--map-keys: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(map_keys, dict):
            raise UserError("--map-keys: expected a JSON object like '{\"prompt\": \"zh_instruction\"}'")
    return HANDLERS[name](map_keys)
