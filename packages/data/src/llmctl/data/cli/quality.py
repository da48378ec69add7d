"""`llmctl data train-classifier | classify | mix`: model-based quality, domains and the domain mix."""

from __future__ import annotations

import click
from llmctl.core.errors import UserError

from . import data_group
from .common import (
    CONTEXT,
    _echo_resumed,
    _executor,
    _executor_options,
    _inputs_option,
    _shard_options,
    _single_shard,
    _text_key_option,
)


@data_group.command("train-classifier", context_settings=CONTEXT)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    required=True,
    help="Labelled file(s)/directories; with --labels-from-source each is PATH=LABEL.",
)
@_text_key_option
@click.option("--label-key", default="label", show_default=True, help="Column holding the label.")
@click.option(
    "--labels-from-source",
    is_flag=True,
    help="Label whole sources: --input good.jsonl=1 --input spam.jsonl=0 (no label column needed).",
)
@click.option(
    "--output-dir", required=True, help="Classifier directory to write (replaced only when complete)."
)
@click.option("--arch", default="fasttext", show_default=True, help="fasttext or bert.")
@click.option(
    "--task",
    default="auto",
    show_default=True,
    help="binary, multiclass, regression, or auto (from the labels).",
)
@click.option(
    "--val-fraction",
    type=float,
    default=0.1,
    show_default=True,
    help="Held-out share per class for the metrics.",
)
@click.option(
    "--positive", default=None, help="binary: the label whose probability is the score (default 1/true)."
)
@click.option(
    "--column",
    default=None,
    help="Column classify writes (default quality_score; multiclass: domain and domain_score).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=int, default=None, help="Passes over the training rows (fasttext 10, bert 3).")
@click.option("--lr", type=float, default=None, help="Learning rate (fasttext 0.5, bert 5e-4).")
@click.option("--threads", type=int, default=None, help="CPU threads for training (fasttext default 1).")
@click.option("--dim", type=int, default=None, help="fasttext: vector size (64).")
@click.option("--word-ngrams", type=int, default=None, help="fasttext: word n-grams (2).")
@click.option("--min-count", type=int, default=None, help="fasttext: minimal word count (1).")
@click.option(
    "--init",
    default=None,
    help="bert: a local HF encoder dir to fine-tune (default: a small BERT from scratch).",
)
@click.option("--layers", type=int, default=None, help="bert from scratch: layers (2).")
@click.option("--hidden", type=int, default=None, help="bert from scratch: hidden size (64).")
@click.option("--heads", type=int, default=None, help="bert from scratch: attention heads (2).")
@click.option("--vocab-size", type=int, default=None, help="bert from scratch: WordPiece vocabulary (4000).")
@click.option("--max-length", type=int, default=None, help="bert: tokens per text (128).")
@click.option("--batch-size", type=int, default=None, help="bert: rows per training step (32).")
@click.option("--device", default=None, help="bert: auto, cpu, cuda (default auto).")
def train_classifier_cmd(
    inputs,
    text_key,
    label_key,
    labels_from_source,
    output_dir,
    arch,
    task,
    val_fraction,
    positive,
    column,
    seed,
    epochs,
    lr,
    threads,
    dim,
    word_ngrams,
    min_count,
    init,
    layers,
    hidden,
    heads,
    vocab_size,
    max_length,
    batch_size,
    device,
) -> None:
    """Train a quality scorer or a domain classifier (fastText or BERT) and report held-out metrics per label.

    \b
    Writes OUTPUT_DIR with the backend's files (fastText model.bin; BERT: an HF dir that
    AutoModelForSequenceClassification loads) plus llmctl_classifier.json (labels, text preparation,
    threshold, column, metrics).
    Examples:
      llmctl data train-classifier --input labelled.jsonl --label-key label --output-dir clf/quality
      llmctl data train-classifier --labels-from-source --input wiki.jsonl=1 --input crawl.jsonl=0 \\
        --output-dir clf/quality --arch bert --layers 4 --hidden 256
      llmctl data train-classifier --input domains.jsonl --label-key domain --output-dir clf/domain
    """
    from ..classifiers.metrics import summary_line
    from ..classifiers.train import train_classifier

    given = {
        "epoch": epochs,
        "lr": lr,
        "threads": threads,
        "dim": dim,
        "word_ngrams": word_ngrams,
        "min_count": min_count,
        "init": init,
        "layers": layers,
        "hidden": hidden,
        "heads": heads,
        "vocab_size": vocab_size,
        "max_length": max_length,
        "batch_size": batch_size,
        "device": device,
    }
    meta = train_classifier(
        inputs,
        output_dir,
        arch,
        task,
        text_key,
        label_key,
        labels_from_source,
        val_fraction,
        positive,
        column,
        seed,
        {k: v for k, v in given.items() if v is not None},
    )
    rows = meta.trained_on["train"]["rows"]
    click.echo(
        f"{arch} {meta.task} classifier ({', '.join(meta.labels)}) trained on {rows} rows -> {output_dir}"
    )
    click.echo(summary_line(meta.metrics, meta.task))


def _classifier_specs(classifiers, score_key, label_key) -> list[tuple[str, str | None]]:
    specs = []
    for spec in classifiers:
        d, sep, col = str(spec).partition("=")
        specs.append((d, col or None))
    if score_key or label_key:
        if len(specs) != 1:
            raise UserError(
                "--score-key/--label-key name the column of one classifier; with several, use DIR=COLUMN"
            )
        specs[0] = (specs[0][0], score_key or label_key)
    return specs


@data_group.command("classify", context_settings=CONTEXT)
@_inputs_option
@click.option(
    "--classifier",
    "classifiers",
    multiple=True,
    required=True,
    help="Classifier dir (repeat for several in one pass); DIR=COLUMN renames its column.",
)
@click.option(
    "--output", required=True, help="Output directory: the input's layout, columns added to every row."
)
@click.option(
    "--score-key", default=None, help="Score column of a binary/regression classifier (default: its own)."
)
@click.option("--label-key", default=None, help="Label column of a multiclass classifier (default: its own).")
@_text_key_option
@click.option("--lang-key", default=None, help="Language column (default: a character-class guess per row).")
@click.option(
    "--domain-key",
    default="domain",
    show_default=True,
    help="Domain column the report splits by (from the input, or a classifier of this pass).",
)
@click.option("--batch-size", type=int, default=500, show_default=True, help="Rows scored per batch.")
@click.option(
    "--rows-per-file",
    type=int,
    default=100_000,
    show_default=True,
    help="Rows per output file (a slab: the unit shards take when files are fewer than shards).",
)
@click.option(
    "--output-format",
    type=click.Choice(["jsonl", "parquet"]),
    default=None,
    help="Default: parquet for parquet input, else jsonl.",
)
@click.option("--sample-out", default=None, help="Write the lowest/highest scoring examples here (jsonl).")
@click.option("--sample-k", type=int, default=5, show_default=True, help="Examples per end, column and run.")
@click.option("--device", default="auto", show_default=True, help="bert: auto, cpu or cuda.")
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="bert: torch threads per shard (add --workers rather than threads).",
)
@_shard_options
def classify_cmd(
    inputs,
    classifiers,
    output,
    score_key,
    label_key,
    text_key,
    lang_key,
    domain_key,
    batch_size,
    rows_per_file,
    output_format,
    sample_out,
    sample_k,
    device,
    threads,
    shard_index,
    num_shards,
    workers,
    executor_name,
    ray_address,
) -> None:
    """Score every row with one or more classifiers; report each score per language and per domain.

    \b
    Output bytes do not depend on --workers, --num-shards or --executor; a rerun after a crash resumes.
    Examples:
      llmctl data classify --input clean/ --classifier clf/quality --output scored/ --workers 8
      llmctl data classify --input clean/ --classifier clf/quality --classifier clf/domain --output scored/ \\
        --sample-out scored_examples.jsonl --executor ray --ray-address auto
      llmctl data sample --input-root scored/ --score-key quality_score --min-score-en 0.5 ...
    """
    from ..classifiers.stage import run_classify

    one = _single_shard(shard_index, num_shards)
    specs = _classifier_specs(classifiers, score_key, label_key)
    ex = _executor(executor_name, workers, ray_address)
    r = run_classify(
        inputs,
        output,
        specs,
        text_key,
        lang_key,
        domain_key or None,
        batch_size,
        rows_per_file,
        output_format,
        sample_out,
        sample_k,
        device,
        threads,
        workers,
        one[1] if one else num_shards,
        executor=ex,
        shard_index=one[0] if one else None,
    )
    _echo_resumed(r)
    click.echo(r["summary"])
    rows = sum(f["rows"] for f in r["files"])
    click.echo(f"wrote {rows:,} rows into {len(r['files'])} files under {output}")
    if sample_out and shard_index is None:
        click.echo(f"lowest/highest examples: {sample_out}")


@data_group.command("mix", context_settings=CONTEXT)
@_inputs_option
@click.option(
    "--tokenizer", "--tokenizer-name-or-path", "tokenizer", required=True, help="Tokenizer directory."
)
@click.option(
    "--output-dir", required=True, help="Writes <group>_{train,val}.bin/.idx, blend.yaml, mix_report.json."
)
@click.option(
    "--ratios", required=True, help="Token share per group, summing to 1: knowledge=0.6,code=0.25,logic=0.15."
)
@click.option(
    "--groups",
    default=None,
    help="Domain -> group: encyclopedia=knowledge,news=knowledge,math=logic (or a YAML file group: "
    "[domains]); a domain named like a group belongs to it.",
)
@click.option("--domain-key", default="domain", show_default=True, help="Domain column (e.g. from classify).")
@_text_key_option
@click.option(
    "--train-tokens",
    type=int,
    default=None,
    help="Tokens the blend is realised over (default: all the groups' tokens).",
)
@click.option(
    "--seq-length", type=int, default=2048, show_default=True, help="Sample length, as in pretraining."
)
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option(
    "--val-ratio", type=float, default=0.01, show_default=True, help="Share of documents for <group>_val."
)
@click.option(
    "--unmapped",
    type=click.Choice(["error", "drop"]),
    default="error",
    show_default=True,
    help="A domain in no group: an error naming the row, or dropped and counted.",
)
@_executor_options
@click.option(
    "--num-shards",
    type=int,
    default=None,
    help="Shards of the split and tokenize steps (default: --workers).",
)
def mix_cmd(
    inputs,
    tokenizer,
    output_dir,
    ratios,
    groups,
    domain_key,
    text_key,
    train_tokens,
    seq_length,
    seed,
    val_ratio,
    unmapped,
    workers,
    executor_name,
    ray_address,
    num_shards,
) -> None:
    """Write the pretraining blend for target domain ratios; report realised token shares, epochs and repeats.

    \b
    Example (domains from a domain classifier, three groups):
      llmctl data classify --input clean/ --classifier clf/domain --output scored/
      llmctl data mix --input scored/ --tokenizer tok --output-dir data/mix \\
        --ratios knowledge=0.6,code=0.25,logic=0.15 --groups prose=knowledge,news=knowledge,math=logic \\
        --train-tokens 2000000000 --seq-length 4096
      llmctl pretrain --config cfg.yaml data.path=data/mix/blend.yaml
    """
    from ..mix import format_report, run_mix

    report = run_mix(
        inputs,
        output_dir,
        tokenizer,
        ratios,
        groups,
        domain_key,
        text_key,
        train_tokens,
        seq_length,
        seed,
        val_ratio,
        unmapped,
        workers,
        num_shards,
        executor=_executor(executor_name, workers, ray_address),
    )
    click.echo(format_report(report))
    click.echo(
        f"blend: {output_dir}/blend.yaml ({report['megatron_blend']}) over {report['train_tokens']:,} tokens"
    )
