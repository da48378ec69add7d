"""Which token ends a document: one resolver for `data tokenize` (the EOD it appends) and for generate,
eval and chat (the id they stop on), so the two can never disagree. Torch-free.

Order: an id recorded by `llmctl data train-tokenizer` (llmctl_tokenizer.json's `eos_id`), then the EOS the
tokenizer's own config names (tokenizer_config.json / special_tokens_map.json, or what the loaded tokenizer
reports), then the first of the usual end-of-text spellings the vocabulary has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .errors import UserError

LLMCTL_TOKENIZER_FILE = "llmctl_tokenizer.json"
#: Names a trained tokenizer may give its end-of-document token when its config names no eos.
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|im_end|>")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable JSON ({e})") from None


def _token_str(value: Any) -> str | None:
    if isinstance(value, dict):  # AddedToken serialised as {"content": ...}
        return value.get("content")
    return value if isinstance(value, str) else None


def llmctl_meta(directory: str | Path | None) -> dict[str, Any]:
    """What `llmctl data train-tokenizer` recorded next to the tokenizer ({} when absent)."""
    if directory is None or not (Path(directory) / LLMCTL_TOKENIZER_FILE).is_file():
        return {}
    return _read_json(Path(directory) / LLMCTL_TOKENIZER_FILE)


def configured_eos_token(directory: str | Path | None) -> str | None:
    """The EOS token a tokenizer directory's config files name, if any."""
    if directory is None:
        return None
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = Path(directory) / name
        if path.is_file():
            token = _token_str(_read_json(path).get("eos_token"))
            if token is not None:
                return token
    return None


def resolve_eos(directory: str | Path | None, token_to_id: Callable[[str], int | None],
                configured: str | None = None) -> tuple[int | None, str | None]:
    """(eos id, eos token) for the tokenizer in `directory`; `token_to_id` looks a token up in its vocabulary
    (None when absent); `configured` is an EOS the loaded tokenizer reports beyond the config files."""
    meta_id = llmctl_meta(directory).get("eos_id")
    if meta_id is not None:
        return int(meta_id), None
    for token in (configured_eos_token(directory), configured):
        if token is not None and token_to_id(token) is not None:
            return token_to_id(token), token
    for token in EOS_CANDIDATES:
        if token_to_id(token) is not None:
            return token_to_id(token), token
    return None, None
