"""One tokenizer interface over every on-disk layout llmctl meets, backed by `transformers.AutoTokenizer`.

Layouts: an HF dir (`tokenizer.json` / `tokenizer_config.json`), a bare sentencepiece `tokenizer.model`
(Llama 2 / llama2.c), or GPT-2/Qwen2-style `vocab.json` + `merges.txt`; also a llmctl checkpoint, whose
`iter_N/tokenizer/` is used. `trust_remote_code` stays off: a tokenizer never runs code from the model dir.
Torch-free, so the data tools can tokenize on a box without torch.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from .errors import UserError
from .special_tokens import resolve_eos

#: Files whose presence makes a directory a tokenizer directory (any one is enough).
_MARKERS = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def has_tokenizer(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and any((path / m).is_file() for m in _MARKERS)


def find_tokenizer_dir(path: str | os.PathLike) -> Path | None:
    """The directory holding tokenizer files for `path`: itself, its `tokenizer/` subfolder, or the
    tokenizer saved in a llmctl checkpoint (root with the pointer file, or an iter_N dir). None if absent."""
    path = Path(path)
    if path.is_file() and path.name in _MARKERS:
        return path.parent
    for cand in (path, path / "tokenizer"):
        if has_tokenizer(cand):
            return cand
    if (path / "latest_checkpointed_iteration.txt").is_file():
        from .nn.checkpoint import resolve_iteration_dir  # torch only for checkpoints, which need it anyway

        it_dir = resolve_iteration_dir(path)
        if has_tokenizer(it_dir / "tokenizer"):
            return it_dir / "tokenizer"
    return None


class Tokenizer:
    """Thin wrapper with the ids llmctl needs; `.hf` is the transformers tokenizer for everything else
    (chat templates, batch encoding, offsets)."""

    def __init__(self, hf: Any, path: str | os.PathLike | None = None):
        self.hf = hf
        self.path = Path(path) if path is not None else None

    # ---- ids ---------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Ids the tokenizer can emit, added/special tokens included (the embedding needs as many)."""
        return len(self.hf)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def bos_id(self) -> int | None:
        return self.hf.bos_token_id

    @functools.cached_property
    def eos_id(self) -> int | None:
        """The end-of-document id, resolved exactly as `llmctl data tokenize` resolves the EOD it appends."""
        vocab = self.hf.get_vocab()
        return resolve_eos(self.path, vocab.get, configured=self.hf.eos_token)[0]

    @property
    def pad_id(self) -> int | None:
        return self.hf.pad_token_id if self.hf.pad_token_id is not None else self.eos_id

    @functools.cached_property
    def stop_ids(self) -> list[int]:
        """Ids that end a generation: eos plus any `eos_token_id` in a generation_config.json next to the
        tokenizer (instruct models often stop on several, e.g. <|im_end|> and <|endoftext|>)."""
        ids = [self.eos_id] if self.eos_id is not None else []
        gen = self.path / "generation_config.json" if self.path is not None else None
        if gen is not None and gen.is_file():
            try:
                extra = json.loads(gen.read_text(encoding="utf-8")).get("eos_token_id")
            except (ValueError, UnicodeDecodeError):
                raise UserError(f"{gen}: not valid JSON") from None
            for i in extra if isinstance(extra, list) else [extra]:
                if isinstance(i, int) and i not in ids:
                    ids.append(i)
        return ids

    @functools.cached_property
    def adds_bos(self) -> bool:
        """Whether this tokenizer's own config prepends BOS (Llama sentencepiece does, Qwen has no BOS)."""
        return self.bos_id is not None and self.hf.encode("a", add_special_tokens=True)[:1] == [self.bos_id]

    # ---- text <-> ids ------------------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of `text` with no special tokens except an optional leading BOS."""
        ids = self.hf.encode(text, add_special_tokens=False)
        if add_bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ---- files -------------------------------------------------------------------------------------------
    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write the tokenizer to `out_dir`: the original files when loaded from disk (byte-identical, so
        sentencepiece models and CRLF merges survive), plus HF's own files when that alone would not load."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.path is not None and has_tokenizer(self.path):
            from .nn.checkpoint import copy_tokenizer

            copy_tokenizer(self.path, out_dir)
        if not ((out_dir / "tokenizer_config.json").is_file() or (out_dir / "tokenizer.json").is_file()):
            self.hf.save_pretrained(out_dir)
        return out_dir

    def __repr__(self) -> str:
        return (
            f"Tokenizer({type(self.hf).__name__}, vocab_size={self.vocab_size}, bos={self.bos_id}, "
            f"eos={self.eos_id}, pad={self.pad_id}, path={str(self.path) if self.path else None!r})"
        )


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load the tokenizer in `path` (see module doc for layouts); UserError when there is none."""
    src = Path(path)
    if not src.exists():
        raise UserError(f"tokenizer path not found: {src}")
    tok_dir = find_tokenizer_dir(src)
    if tok_dir is None:
        raise UserError(
            f"{src}: no tokenizer found (expected tokenizer.json, tokenizer_config.json, "
            "tokenizer.model or vocab.json + merges.txt, or a checkpoint with a tokenizer/ folder)"
        )
    import transformers

    bare_sentencepiece = (tok_dir / "tokenizer.model").is_file() and not any(
        (tok_dir / m).is_file() for m in ("tokenizer.json", "tokenizer_config.json")
    )
    try:
        if bare_sentencepiece:
            # No config to name the class: a bare tokenizer.model is Llama-style sentencepiece (llama2.c),
            # which prepends BOS like sentencepiece's Llama recipe.
            hf = transformers.LlamaTokenizer.from_pretrained(
                str(tok_dir), add_bos_token=True, trust_remote_code=False
            )
        else:
            hf = transformers.AutoTokenizer.from_pretrained(str(tok_dir), trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = (
            " (sentencepiece models need `pip install sentencepiece protobuf`)" if bare_sentencepiece else ""
        )
        raise UserError(f"{tok_dir}: cannot load tokenizer: {first[:200]}{hint}") from None
    return Tokenizer(hf, tok_dir)
