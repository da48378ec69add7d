"""`llmctl data …` commands: thin click wrappers over the stage modules (no logic lives here), split by job:
`corpus.py` (synth, sample, clean, dedup), `quality.py` (train-classifier, classify, mix), `tokens.py`
(train-tokenizer, tokenize, merge, inspect), `common.py` (the shared options); `sft/cli.py` adds sft and
preprocess.

Sharding convention for every stage: without --shard-index the command runs all shards (as many as --workers
unless --num-shards says otherwise) on --executor (local processes or Ray tasks) through `run_stage`, resuming
from completion markers, and writes one merged report; with --shard-index i --num-shards n it runs only shard i,
so a Slurm array can fan it out.
"""

from __future__ import annotations

import click

from .common import CONTEXT


@click.group("data", context_settings=CONTEXT)
def data_group() -> None:
    """Data pipeline: synth, sample, clean, dedup, classify, mix, train-tokenizer, tokenize, inspect, merge.

    \b
    Example (the toy pipeline end to end):
      llmctl data synth --out-dir toy
      llmctl data clean --input toy/corpus.jsonl --output toy/clean
      llmctl data dedup --input toy/clean --output toy/dedup
      llmctl data train-tokenizer --input toy/dedup --output-dir toy/tok --vocab-size 2048 --type spm-bpe
      llmctl data tokenize --input toy/dedup --tokenizer toy/tok --output-prefix toy/tok_data/toy
      llmctl data inspect toy/tok_data/toy_train --tokenizer toy/tok
    """


from . import corpus, quality, tokens  # noqa: F401  (register their commands on data_group)

__all__ = ["data_group"]
