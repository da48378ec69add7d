"""Tokens: tokenize a corpus into MMIDIDX datasets (`tokenize.py`) and merge shards in reading order (`merge.py`).

The MMIDIDX reader/writer is core's torch-free `llmctl.core.mmidx` (one copy, shared with training and eval).
"""

from .merge import merge_in_key_order
from .tokenize import TokenizeResult, TokenizeStage, tokenize_corpus

__all__ = ["TokenizeResult", "TokenizeStage", "merge_in_key_order", "tokenize_corpus"]
