"""`llmctl data train-tokenizer | tokenize | merge | inspect`: the token-side commands."""

from __future__ import annotations

import json

import click

from llmctl.core.errors import UserError

from . import data_group
from .common import CONTEXT, _echo_resumed, _executor, _executor_options, _inputs_option, _text_key_option


@data_group.command("train-tokenizer", context_settings=CONTEXT)
@_inputs_option
@click.option("--output-dir", required=True, help="Tokenizer directory (loads with AutoTokenizer).")
@click.option("--vocab-size", type=int, required=True, help="Vocabulary size (specials included).")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["spm-bpe", "spm-unigram", "hf-bytelevel-bpe"]),
    default="spm-bpe",
    show_default=True,
)
@click.option(
    "--special-tokens",
    multiple=True,
    help="Extra special tokens (repeat or comma-separate); <unk> <s> </s> <pad> are always added.",
)
@_text_key_option
@click.option(
    "--character-coverage",
    type=float,
    default=0.9995,
    show_default=True,
    help="sentencepiece: share of characters covered by the vocabulary (rest: byte fallback).",
)
@click.option(
    "--max-sentences",
    type=int,
    default=5_000_000,
    show_default=True,
    help="Lines sampled for training, the same ones for the same --seed (bounds memory).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@_executor_options
@click.option(
    "--num-shards",
    type=int,
    default=None,
    help="Shards of the corpus pass (default: --workers); the tokenizer does not depend on it.",
)
def train_tokenizer_cmd(
    inputs,
    output_dir,
    vocab_size,
    kind,
    special_tokens,
    text_key,
    character_coverage,
    max_sentences,
    seed,
    workers,
    executor_name,
    ray_address,
    num_shards,
) -> None:
    """Train a sentencepiece (byte fallback) or byte-level BPE tokenizer into an HF tokenizer directory.

    \b
    Example:
      llmctl data train-tokenizer --input toy/dedup --output-dir toy/tok --vocab-size 2048 --type spm-bpe \\
        --special-tokens "<|im_start|>,<|im_end|>"
    """
    from ..tokenizer_train import train_tokenizer

    specials = [s.strip() for item in special_tokens for s in item.split(",") if s.strip()]
    meta = train_tokenizer(
        inputs,
        output_dir,
        vocab_size,
        kind,
        specials,
        text_key,
        character_coverage,
        max_sentences,
        seed,
        num_shards=num_shards,
        executor=_executor(executor_name, workers, ray_address),
    )
    _echo_resumed(meta)
    click.echo(
        f"{kind} tokenizer with {meta['vocab_size']} tokens (padded {meta['padded_vocab_size']}) "
        f"trained on {meta['trained_on']['docs']:,} documents -> {output_dir}"
    )


@data_group.command("tokenize", context_settings=CONTEXT)
@_inputs_option
@click.option(
    "--tokenizer",
    "--tokenizer-name-or-path",
    "tokenizer",
    required=True,
    help="Tokenizer directory (tokenizer.json, or any AutoTokenizer layout).",
)
@click.option("--output-prefix", required=True, help="Writes PREFIX_train.bin/.idx and PREFIX_val.bin/.idx.")
@_text_key_option
@_executor_options
@click.option(
    "--append-eod/--no-append-eod", default=True, show_default=True, help="Append EOS after each document."
)
@click.option(
    "--val-ratio", type=float, default=0.01, show_default=True, help="Share of documents for PREFIX_val."
)
@click.option("--seed", type=int, default=1234, show_default=True, help="Seed of the train/val split hash.")
@click.option("--log-interval", type=int, default=0, help="Print a progress line every N documents.")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "uint16", "int32"]),
    default="auto",
    show_default=True,
    help="Token dtype (auto: uint16 when the vocabulary fits).",
)
@click.option(
    "--tokenizer-type", default=None, hidden=True, help="Accepted for Megatron compatibility; ignored."
)
@click.option(
    "--num-shards",
    type=int,
    default=None,
    help="Split the input into this many shards (default: --workers); the output does not depend on it.",
)
@click.option(
    "--shard-index",
    type=int,
    default=None,
    help="Run only this shard (e.g. $SLURM_ARRAY_TASK_ID): writes PREFIX-<i>-of-<n>_{train,val} for `data merge`.",
)
def tokenize_cmd(
    inputs,
    tokenizer,
    output_prefix,
    text_key,
    workers,
    append_eod,
    val_ratio,
    seed,
    log_interval,
    dtype,
    tokenizer_type,
    num_shards,
    shard_index,
    executor_name,
    ray_address,
) -> None:
    """Tokenize documents into Megatron MMIDIDX datasets PREFIX_train / PREFIX_val.

    \b
    Example (Megatron/MindSpeed flag spellings work too):
      llmctl data tokenize --input toy/dedup --tokenizer toy/tok --output-prefix data/toy --workers 4
      llmctl data tokenize --input big/ --tokenizer tok --output-prefix data/big --executor ray --ray-address auto
      llmctl data tokenize --input sample/ --tokenizer-name-or-path assets/zen_tokenizer \\
        --output-prefix data/pretrain --json-keys text --append-eod --workers 16 --log-interval 10000
    """
    from ..tokens import tokenize_corpus

    r = tokenize_corpus(
        inputs,
        tokenizer,
        output_prefix,
        text_key,
        workers,
        append_eod,
        val_ratio,
        seed,
        dtype,
        log_interval,
        shard_index,
        num_shards,
        executor=_executor(executor_name, workers, ray_address),
    )
    rep = r.report
    for split, o in rep["outputs"].items():
        click.echo(
            f"{split}: {o['documents']:,} documents, {o['tokens']:,} tokens -> {r.prefixes[split]}.bin/.idx"
        )
    skipped = rep.get("skipped") or {}
    click.echo(
        f"dtype {rep['dtype']}, {rep['run']['tokens_per_s']:,.0f} tokens/s"
        + (f"; skipped {', '.join(f'{v} {k}' for k, v in skipped.items())} documents" if skipped else "")
    )
    _echo_resumed(rep)


@data_group.command("merge", context_settings=CONTEXT)
@click.option(
    "--input", "inputs", multiple=True, required=True, help="Dataset prefixes to concatenate, in order."
)
@click.option("--output-prefix", required=True)
def merge_cmd(inputs, output_prefix) -> None:
    """Concatenate MMIDIDX datasets (e.g. per-shard tokenize outputs) into one.

    \b
    Example:
      llmctl data merge --input data/pt-00000-of-00002_train --input data/pt-00001-of-00002_train \\
        --output-prefix data/pt_train
    """
    from llmctl.core.mmidx import merge

    prefixes = [p for item in inputs for p in item.split(",") if p]
    ds = merge(prefixes, output_prefix)
    click.echo(f"{output_prefix}: {ds.num_documents:,} documents, {ds.num_tokens:,} tokens")


@data_group.command("inspect", context_settings=CONTEXT)
@click.argument("prefix", required=False)
@click.option(
    "--tokenizer",
    "--tokenizer-name-or-path",
    "tokenizer",
    default=None,
    help="Decode a sample document with this tokenizer.",
)
@click.option("--samples", type=int, default=1, show_default=True, help="Documents to show.")
@click.option("--bins", type=int, default=10, show_default=True, help="Histogram bins.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--positions", default=None, metavar="A:B",
              help="The documents training samples A..B-1 hold (a loss-spike event's sample_positions), in the "
                   "blend pretraining built: give --blend (or PREFIX), --seq-length, --num-samples, --seed.")
@click.option("--blend", default=None, help="With --positions: the run's data.path or the stage's blend.")
@click.option("--seq-length", type=click.IntRange(min=1), default=None, help="With --positions.")
@click.option("--num-samples", type=click.IntRange(min=1), default=None, help="With --positions.")
@click.option("--seed", type=int, default=1234, show_default=True, help="With --positions: train.seed.")
@click.option("--curriculum", default=None, metavar="JSON", help="With --positions: the stage's curriculum.")
def inspect_cmd(prefix, tokenizer, samples, bins, as_json, positions, blend, seq_length, num_samples, seed,
                curriculum) -> None:
    """Documents, tokens, dtype, a length histogram and a decoded sample of a tokenized dataset; with
    --positions, the documents behind training samples (the command a loss-spike event logs).

    \b
    Example:
      llmctl data inspect data/toy_train --tokenizer toy/tok
      llmctl data inspect --blend '0.7 data/web 0.3 data/code' --seq-length 4096 --num-samples 2560000 \
          --seed 1234 --positions 76800:76928 --tokenizer tok
    """
    from ..inspect_data import inspect_positions, inspect_prefix, render, render_positions

    if positions is not None:
        spec = blend or prefix
        if spec is None or seq_length is None or num_samples is None:
            raise UserError("--positions needs --blend (or PREFIX), --seq-length and --num-samples")
        info = inspect_positions(spec, positions, seq_length, num_samples, seed, tokenizer,
                                 curriculum=json.loads(curriculum) if curriculum else None)
        click.echo(json.dumps(info, ensure_ascii=False, indent=2) if as_json else render_positions(info))
        return
    if prefix is None:
        raise UserError("give a PREFIX to inspect (or --positions with --blend)")
    info = inspect_prefix(prefix, tokenizer, samples, bins)
    click.echo(json.dumps(info, ensure_ascii=False, indent=2) if as_json else render(info))
