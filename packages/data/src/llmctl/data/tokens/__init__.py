"""Tokens: tokenize a corpus into MMIDIDX datasets (`tokenize.py`) and merge shards in reading order (`merge.py`).

The MMIDIDX reader/writer itself stays in `llmctl.data.indexed` and the tokenizer's special ids in
`llmctl.data.hf_tokenizer`.
"""

from .merge import merge_in_key_order
from .tokenize import TokenizeResult, TokenizeStage, tokenize_corpus

__all__ = ["TokenizeResult", "TokenizeStage", "merge_in_key_order", "tokenize_corpus"]
