"""Chat/prompt templates as data (MindSpeed-LLM's `templates.json` schema) and the one renderer for them.

Why data: a template is a handful of strings (user/system/assistant slots, separator, prefix, default system,
stop words, EOS replacement), so users add one with a JSON file (`--prompt-type-path`) instead of code, and the
same entry renders training data (`llmctl data sft`), training prompts and `llmctl chat` prompts.

The rendering rules follow MindSpeed-LLM (which follows LLaMA-Factory 0.8) so data preprocessed by either tool
has the same token ids: turn 0 is `prefix + system + user`, later user turns are `separator + user`, each
message's slots are tokenised one slot at a time, `{"eos_token"}` in a slot is the tokenizer's EOS or, with
`replace_eos`, the first stop word. Template classes as in MindSpeed: `Template` (separator between turns),
`LFDefaultTemplate` (no separator), `Llama2Template` (system text inside the first user turn),
`ReasoningTemplate` (an empty `<think>` block appended, untrained, to user turns whose answer has none).
Not supported: tool/function-call formatting beyond plain `{{content}}`, and efficient_eos's mid-conversation
label trick (efficient_eos templates get one trained EOS at the end).
"""

from __future__ import annotations

import dataclasses
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from llmctl.core.errors import UserError

USER, ASSISTANT, SYSTEM, OBSERVATION, FUNCTION = "user", "assistant", "system", "observation", "function"
PROMPT_ROLES = (USER, OBSERVATION)  # even positions; never trained
ANSWER_ROLES = (ASSISTANT, FUNCTION)  # odd positions; trained
CLASSES = ("Template", "LFDefaultTemplate", "Llama2Template", "ReasoningTemplate")
_KEYS = {
    "name", "format_user", "format_assistant", "format_system", "format_function", "format_observation",
    "format_tools", "format_separator", "format_prefix", "default_system", "stop_words", "thought_words",
    "efficient_eos", "replace_eos", "force_system", "template_class",
}

Slot = Any  # str, or ("special", "bos_token" | "eos_token"), or ("token", "<tok>")


class Segment(NamedTuple):
    """A piece of rendered text and whether training computes loss on it."""

    text: str
    trained: bool


@dataclasses.dataclass(frozen=True)
class Template:
    """One chat format. Slots are tuples of strings and special markers (see `Slot`)."""

    name: str
    format_user: tuple = ("{{content}}",)
    format_assistant: tuple = ("{{content}}", ("special", "eos_token"))
    format_system: tuple = ("{{content}}",)
    format_observation: tuple = ("{{content}}",)
    format_function: tuple = ("{{content}}", ("special", "eos_token"))
    format_separator: tuple = ()
    format_prefix: tuple = ()
    default_system: str = ""
    stop_words: tuple = ()
    efficient_eos: bool = False
    replace_eos: bool = False
    template_class: str = "Template"
    thought_words: tuple = ("<think>\n", "\n</think>\n\n")
    source: str = "built-in"

    @property
    def uses_separator(self) -> bool:
        return self.template_class != "LFDefaultTemplate"


# ---- loading ------------------------------------------------------------------------------------------------
def _slots(value: Any, where: str) -> tuple | None:
    if value is None:
        return None
    slots = value.get("slots") if isinstance(value, dict) else None
    if not isinstance(slots, list):
        raise UserError(f"{where}: expected {{\"slots\": [...]}}, got {json.dumps(value)[:60]}")
    out: list[Slot] = []
    for s in slots:
        if isinstance(s, str):
            out.append(s)
        elif isinstance(s, list) and len(s) == 1 and s[0] in ("bos_token", "eos_token"):
            out.append(("special", s[0]))
        elif isinstance(s, dict) and isinstance(s.get("token"), str):
            out.append(("token", s["token"]))
        else:
            raise UserError(f"{where}: unsupported slot {json.dumps(s)[:60]} (a string, [\"bos_token\"], "
                            "[\"eos_token\"] or {\"token\": ...})")
    return tuple(out)


def template_from_dict(d: dict, source: str = "built-in") -> Template:
    """One templates.json entry as a Template; defaults as MindSpeed's `_register_template`."""
    from llmctl.core.config import did_you_mean

    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise UserError(f"{source}: every template needs a 'name'")
    where = f"{source}: template '{name}'"
    for key in d:
        if key not in _KEYS:
            raise UserError(f"{where}: unknown key '{key}'{did_you_mean(key, _KEYS)}")
    cls = d.get("template_class") or "Template"
    if cls not in CLASSES:
        raise UserError(f"{where}: unknown template_class '{cls}'{did_you_mean(cls, CLASSES)}; "
                        f"available: {', '.join(CLASSES)}")
    efficient_eos = bool(d.get("efficient_eos", False))
    eos = () if efficient_eos else (("special", "eos_token"),)
    user = _slots(d.get("format_user"), f"{where} format_user") or ("{{content}}",)
    system = d.get("default_system", "")
    if isinstance(system, list):
        system = "".join(system)
    stop_words = tuple(d.get("stop_words") or ())
    replace_eos = bool(d.get("replace_eos", False))
    if replace_eos and not stop_words:
        raise UserError(f"{where}: replace_eos needs at least one stop word")
    return Template(
        name=name,
        format_user=user,
        format_assistant=_slots(d.get("format_assistant"), f"{where} format_assistant") or ("{{content}}", *eos),
        format_system=_slots(d.get("format_system"), f"{where} format_system") or ("{{content}}",),
        format_observation=_slots(d.get("format_observation"), f"{where} format_observation") or user,
        format_function=_slots(d.get("format_function"), f"{where} format_function") or ("{{content}}", *eos),
        format_separator=_slots(d.get("format_separator"), f"{where} format_separator") or (),
        format_prefix=_slots(d.get("format_prefix"), f"{where} format_prefix") or (),
        default_system=system,
        stop_words=stop_words,
        efficient_eos=efficient_eos,
        replace_eos=replace_eos,
        template_class=cls,
        thought_words=tuple(d.get("thought_words") or ("<think>\n", "\n</think>\n\n")),
        source=source,
    )


def load_template_file(path: str | os.PathLike) -> dict[str, Template]:
    """A templates.json file (a list of entries, MindSpeed's format) as name -> Template."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"--prompt-type-path {p}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise UserError(f"{p}: expected a JSON list of template objects")
    return {t.name: t for t in (template_from_dict(x, str(p)) for x in data)}


def builtin_templates() -> dict[str, Template]:
    """The templates shipped as package data (sft/templates.json)."""
    text = resources.files(__package__).joinpath("templates.json").read_text(encoding="utf-8")
    return {t.name: t for t in (template_from_dict(x) for x in json.loads(text))}


def registered_templates() -> dict[str, Template]:
    """Every template on the plugin bus (built-ins and plugins)."""
    from llmctl.core.plugins import get_bus

    return {name: entry.value for name, entry in get_bus().registry("templates").items()}


def get_template(name: str | Template, path: str | os.PathLike | None = None) -> Template:
    """`name` from the user file `path` (its entries win) or from the bus; unknown names are a UserError."""
    if isinstance(name, Template):
        return name
    from llmctl.core.config import did_you_mean

    extra = load_template_file(path) if path else {}
    if name in extra:
        return extra[name]
    table = registered_templates()
    if name in table:
        return table[name]
    names = sorted(set(table) | set(extra))
    raise UserError(f"unknown prompt type '{name}'{did_you_mean(name, names)}; available: {', '.join(names)}")


# ---- rendering ----------------------------------------------------------------------------------------------
def _fill(slots: Iterable[Slot], content: str) -> list[Slot]:
    return [s.replace("{{content}}", content, 1) if isinstance(s, str) else s for s in slots]


def split_system(messages: Sequence[dict], system: str | None) -> tuple[list[dict], str | None]:
    """Take a leading system message out of `messages` (the `system` argument, when given, wins)."""
    msgs = [dict(m) for m in messages]
    if msgs and msgs[0].get("role") == SYSTEM:
        first = msgs.pop(0)
        if system is None:
            system = first.get("content") or ""
    return msgs, system


def check_roles(messages: Sequence[dict]) -> None:
    """Turns alternate: user/observation at even positions, assistant/function at odd ones."""
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        want = PROMPT_ROLES if i % 2 == 0 else ANSWER_ROLES
        if role not in want:
            raise UserError(f"message {i + 1} has role '{role}' where {' or '.join(want)} is expected")
        if not isinstance(content, str):
            raise UserError(f"message {i + 1} ({role}) has no text content")


def _pieces(t: Template, messages: Sequence[dict], system: str | None,
            add_generation_prompt: bool) -> list[tuple[Slot, bool]]:
    """The slot elements of a conversation, in order, each with its trained flag (MindSpeed's `_encode`)."""
    msgs, system = split_system(messages, system)
    check_roles(msgs)
    if add_generation_prompt and (not msgs or msgs[-1]["role"] not in PROMPT_ROLES):
        raise UserError("add_generation_prompt needs a conversation that ends with a user turn")
    system = system or t.default_system
    empty_thought = t.thought_words[0] + t.thought_words[1]
    out: list[tuple[Slot, bool]] = []
    for i, m in enumerate(msgs):
        role, content = m["role"], m["content"]
        elems: list[Slot] = []
        if i == 0:
            elems += t.format_prefix
            if system and t.template_class == "Llama2Template":
                sys_text = _fill(t.format_system, system)[0]
                content = (sys_text if isinstance(sys_text, str) else "") + content
            elif system:
                elems += _fill(t.format_system, system)
        elif i % 2 == 0 and t.uses_separator:
            elems += t.format_separator
        fmt = {USER: t.format_user, ASSISTANT: t.format_assistant, OBSERVATION: t.format_observation,
               FUNCTION: t.format_function}[role]
        elems += _fill(fmt, content)
        if t.template_class == "ReasoningTemplate" and role in PROMPT_ROLES:
            answer = msgs[i + 1]["content"] if i + 1 < len(msgs) else ""
            if i + 1 < len(msgs) or add_generation_prompt:
                if t.thought_words[0] not in answer and t.thought_words[1] not in answer:
                    elems.append(empty_thought)
        out += [(e, role in ANSWER_ROLES) for e in elems if e != ""]
    if t.efficient_eos and msgs and msgs[-1]["role"] in ANSWER_ROLES:
        out.append((("special", "eos_token"), True))
    return out


def _hf(tokenizer: Any) -> Any:
    return getattr(tokenizer, "hf", tokenizer)  # llmctl.core.tokenizer.Tokenizer or a transformers tokenizer


def _token_id(hf: Any, token: str, what: str) -> int:
    tid = hf.convert_tokens_to_ids(token)
    if tid is None or (tid == hf.unk_token_id and token != hf.unk_token):
        raise UserError(f"{what} '{token}' is not a token of this tokenizer")
    return int(tid)


def eos_token_id(tokenizer: Any, template: str | Template) -> int:
    """The id an `{"eos_token"}` slot becomes: the first stop word under replace_eos, else the tokenizer's EOS."""
    t, hf = get_template(template), _hf(tokenizer)
    if t.replace_eos:
        return _token_id(hf, t.stop_words[0], f"template '{t.name}' stop word")
    if hf.eos_token_id is None:
        raise UserError(f"template '{t.name}' needs an EOS token and the tokenizer has none")
    return int(hf.eos_token_id)


def stop_token_ids(tokenizer: Any, template: str | Template) -> list[int]:
    """Ids that end generation: the template's EOS and every stop word that is a token."""
    t, hf = get_template(template), _hf(tokenizer)
    ids = [eos_token_id(tokenizer, t)]
    for w in t.stop_words:
        tid = hf.convert_tokens_to_ids(w)
        if tid is not None and tid != hf.unk_token_id and tid not in ids:
            ids.append(int(tid))
    return ids


def _special(hf: Any, t: Template, elem: tuple) -> int | None:
    kind, name = elem
    if kind == "token":
        return _token_id(hf, name, f"template '{t.name}' token")
    if name == "bos_token":
        return None if hf.bos_token_id is None else int(hf.bos_token_id)
    return eos_token_id(hf, t)


def render(template: str | Template, messages: Sequence[dict], add_generation_prompt: bool = False, *,
           system: str | None = None, tokenizer: Any = None) -> list[Segment]:
    """The conversation as (text, trained) segments. Pass `tokenizer` to spell BOS/EOS as that tokenizer does
    (without one, BOS is omitted and EOS is the first stop word, or omitted when the template has none)."""
    t = get_template(template)
    hf = _hf(tokenizer) if tokenizer is not None else None
    out: list[Segment] = []
    for elem, trained in _pieces(t, messages, system, add_generation_prompt):
        if isinstance(elem, str):
            out.append(Segment(elem, trained))
            continue
        if hf is not None:
            tid = _special(hf, t, elem)
            text = "" if tid is None else hf.convert_ids_to_tokens(tid)
        elif elem[0] == "token":
            text = elem[1]
        else:
            text = t.stop_words[0] if elem[1] == "eos_token" and t.stop_words else ""
        if text:
            out.append(Segment(text, trained))
    return out


def render_text(template: str | Template, messages: Sequence[dict], add_generation_prompt: bool = False, *,
                system: str | None = None, tokenizer: Any = None) -> str:
    return "".join(s.text for s in render(template, messages, add_generation_prompt, system=system,
                                          tokenizer=tokenizer))


def encode_conversation(tokenizer: Any, template: str | Template, messages: Sequence[dict], *,
                        system: str | None = None, add_generation_prompt: bool = False,
                        ignore_index: int = -100) -> tuple[list[int], list[int]]:
    """(input_ids, labels): each slot tokenised on its own (as MindSpeed does), labels `ignore_index` on every
    token outside assistant turns and equal to input_ids inside them."""
    t, hf = get_template(template), _hf(tokenizer)
    ids: list[int] = []
    labels: list[int] = []
    for elem, trained in _pieces(t, messages, system, add_generation_prompt):
        if isinstance(elem, str):
            part = hf.encode(elem, add_special_tokens=False)
        else:
            tid = _special(hf, t, elem)
            part = [] if tid is None else [tid]
        ids += part
        labels += part if trained else [ignore_index] * len(part)
    return ids, labels
