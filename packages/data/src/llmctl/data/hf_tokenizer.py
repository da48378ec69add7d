"""Load a fast (`tokenizers`) tokenizer and its special ids from a tokenizer directory, without torch.

`tokenizer.json` loads directly with `tokenizers` (fast to start, picklable as a JSON string for worker
processes); other layouts (vocab.json + merges.txt, a bare sentencepiece `tokenizer.model`) go through
`transformers.AutoTokenizer` (never with remote code) and its backend tokenizer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llmctl.core.errors import UserError
from llmctl.core.special_tokens import llmctl_meta, resolve_eos


@dataclass
class TokenizerInfo:
    """What tokenize/inspect need: the serialised fast tokenizer and a few ids."""

    path: str
    json: str  # tokenizers.Tokenizer serialised (send this to workers)
    vocab_size: int  # including added tokens
    eos_id: int | None
    eos_token: str | None
    padded_vocab_size: int | None = None

    def load(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.json)


def load_tokenizer_info(path: str | os.PathLike) -> TokenizerInfo:
    """Find the tokenizer at `path` (a directory or a tokenizer.json) and its EOS id."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"--tokenizer {p}: no such file or directory")
    directory = p if p.is_dir() else p.parent
    tok_json = p if p.is_file() and p.suffix == ".json" else directory / "tokenizer.json"
    meta = llmctl_meta(directory)
    eos_token = None  # what a transformers-loaded tokenizer reports, beyond the config files
    if tok_json.is_file():
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(tok_json))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise UserError(
                f"{tok_json}: not a loadable tokenizers file ({str(e).splitlines()[0]})"
            ) from None
        serialized = tok.to_str()
    else:
        try:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
        except Exception as e:
            raise UserError(
                f"--tokenizer {directory}: cannot load a tokenizer here ({str(e).splitlines()[0]})"
            ) from None
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise UserError(
                f"--tokenizer {directory}: only fast (tokenizers-backed) tokenizers are supported"
            )
        tok = backend
        serialized = backend.to_str()
        eos_token = getattr(hf, "eos_token", None)

    eos_id, eos_token = resolve_eos(directory, tok.token_to_id, configured=eos_token)
    if eos_id is not None and eos_token is None:
        eos_token = tok.id_to_token(eos_id)
    ids = tok.get_vocab(with_added_tokens=True).values()
    vocab_size = max(tok.get_vocab_size(with_added_tokens=True), max(ids, default=-1) + 1)
    return TokenizerInfo(str(p), serialized, vocab_size, eos_id, eos_token, meta.get("padded_vocab_size"))
