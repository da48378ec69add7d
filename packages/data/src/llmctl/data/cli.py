"""`llmctl data …` commands: thin click wrappers over the stage modules (no logic lives here).

Sharding convention for every stage: without --shard-index the command runs all shards (as many as --workers
unless --num-shards says otherwise) on --executor (local processes or Ray tasks) through `run_stage`, resuming
from completion markers, and writes one merged report; with --shard-index i --num-shards n it runs only shard i,
so a Slurm array can fan it out.
"""

from __future__ import annotations

import json

import click

from llmctl.core.errors import UserError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _ray_task_option(ctx, param, value):
    """--ray-cpus-per-task / --ray-memory-per-task land in ctx.meta, read by `_executor` (no command signature
    has to carry them)."""
    if value is not None:
        ctx.meta.setdefault("llmctl.ray_task", {})[param.name] = value
    return value


def _memory(value: str | None) -> int | None:
    """'2GB', '512MiB', '1e9' -> bytes (GB = 2^30, as everywhere in llmctl-data)."""
    if value is None:
        return None
    import re

    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMGT]i?B?)?\s*", str(value), re.I)
    if not m:
        raise UserError(f"--ray-memory-per-task {value}: expected bytes or a size such as 2GB")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(unit or " "))


def _executor_options(f):
    f = click.option(
        "--executor",
        "executor_name",
        default="local",
        show_default=True,
        help="Where shards run: 'local' (a pool of --workers processes) or 'ray' (Ray tasks; llmctl-data[ray]).",
    )(f)
    f = click.option(
        "--ray-address",
        default=None,
        help="--executor ray: 'auto' (the cluster `ray start` began here) or HOST:PORT; default: a local Ray.",
    )(f)
    f = click.option(
        "--ray-cpus-per-task", "cpus_per_task", type=float, default=None, expose_value=False,
        callback=_ray_task_option, help="--executor ray: CPUs each shard's task asks for (default 1).",
    )(f)
    f = click.option(
        "--ray-memory-per-task", "memory_per_task", default=None, expose_value=False, callback=_ray_task_option,
        help="--executor ray: memory each shard's task reserves, e.g. 4GB (Ray's scheduler packs by it).",
    )(f)
    return click.option(
        "--workers",
        type=int,
        default=1,
        show_default=True,
        help="Shards running at once (local processes; with ray, CPUs of a local Ray).",
    )(f)


def _executor(name: str, workers: int, ray_address: str | None):
    """The executor a command's shards run on (`--executor`, looked up on the plugin bus)."""
    from .executors import get_executor

    task = dict(click.get_current_context().meta.get("llmctl.ray_task", {}))
    if ray_address and name != "ray":
        raise UserError("--ray-address needs --executor ray")
    if task and name != "ray":
        raise UserError("--ray-cpus-per-task/--ray-memory-per-task need --executor ray")
    if "memory_per_task" in task:
        task["memory_per_task"] = _memory(task["memory_per_task"])
    return get_executor(name, workers=workers, address=ray_address, **task)


def _shard_options(f):
    f = _executor_options(f)
    f = click.option(
        "--num-shards",
        type=int,
        default=None,
        help="Split the input into this many shards (default: --workers).",
    )(f)
    f = click.option(
        "--shard-index",
        type=int,
        default=None,
        help="Run only this shard (0-based) of --num-shards, e.g. $SLURM_ARRAY_TASK_ID.",
    )(f)
    return f


def _inputs_option(f):
    return click.option(
        "--input",
        "inputs",
        multiple=True,
        required=True,
        help="Input file(s) or directories (repeat or comma-separate): parquet, jsonl, json, csv, txt.",
    )(f)


def _text_key_option(f):
    return click.option(
        "--text-key",
        "--json-keys",
        "text_key",
        default=None,
        help="Column holding the text (default: 'text', else 'content').",
    )(f)


def _single_shard(shard_index: int | None, num_shards: int | None) -> tuple[int, int] | None:
    if shard_index is None:
        return None
    return shard_index, num_shards or 1


@click.group("data", context_settings=CONTEXT)
def data_group() -> None:
    """Data pipeline: synth, sample, clean, dedup, train-tokenizer, tokenize, inspect, merge.

    \b
    Example (the toy pipeline end to end):
      llmctl data synth --out-dir toy
      llmctl data clean --input toy/corpus.jsonl --output toy/clean
      llmctl data dedup --input toy/clean --output toy/dedup
      llmctl data train-tokenizer --input toy/dedup --output-dir toy/tok --vocab-size 2048 --type spm-bpe
      llmctl data tokenize --input toy/dedup --tokenizer toy/tok --output-prefix toy/tok_data/toy
      llmctl data inspect toy/tok_data/toy_train --tokenizer toy/tok
    """


@data_group.command("synth", context_settings=CONTEXT)
@click.option(
    "--out-dir", required=True, type=click.Path(file_okay=False), help="Where to write the toy corpus."
)
@click.option("--docs", type=int, default=2000, show_default=True, help="Number of regular documents.")
@click.option("--seed", type=int, default=0, show_default=True)
def synth_cmd(out_dir: str, docs: int, seed: int) -> None:
    """Write a small deterministic zh+en toy corpus and an MMLU-layout multiple-choice set.

    \b
    Writes OUT/corpus.jsonl (id, text, lang), OUT/mc/{dev,test}/toyfacts_{dev,test}.csv, OUT/_synth.json.
    Example:
      llmctl data synth --out-dir toy --docs 2000 --seed 0
    """
    from .synth import synth_corpus

    if docs < 1:
        raise UserError(f"--docs must be >= 1, got {docs}")
    s = synth_corpus(out_dir, docs, seed)
    click.echo(
        f"wrote {s['docs']} documents ({s['bytes']:,} bytes) to {s['corpus']}; "
        f"multiple choice: {s['mc']['dev']}, {s['mc']['test']}"
    )


@data_group.command("sample", context_settings=CONTEXT)
@click.option(
    "--input-root", required=True, help="Parquet corpus root (zh/ and en/ sub-folders, or --lang-key)."
)
@click.option("--out-dir", required=True, help="Output directory for parquet shards + manifest.json.")
@click.option(
    "--train-size-gb", type=float, required=True, help="Total UTF-8 text to sample, in GB (2^30 bytes)."
)
@click.option("--zh-ratio", type=float, required=True, help="Share of bytes in Chinese.")
@click.option("--en-ratio", type=float, required=True, help="Share of bytes in English (zh + en = 1).")
@click.option(
    "--min-score-zh", type=float, default=0.0, show_default=True, help="Keep zh rows scoring at least this."
)
@click.option(
    "--min-score-en", type=float, default=0.0, show_default=True, help="Keep en rows scoring at least this."
)
@click.option(
    "--target-shard-mb", type=float, default=500, show_default=True, help="Output parquet file size (MB)."
)
@click.option("--text-key", default=None, help="Text column (default: 'text', else 'content').")
@click.option("--lang-key", default=None, help="Language column (instead of language sub-folders).")
@click.option("--score-key", default="score", show_default=True, help="Quality score column ('' for none).")
@click.option("--seed", type=int, default=42, show_default=True)
@_shard_options
def sample_cmd(
    input_root,
    out_dir,
    train_size_gb,
    zh_ratio,
    en_ratio,
    min_score_zh,
    min_score_en,
    target_shard_mb,
    text_key,
    lang_key,
    score_key,
    seed,
    shard_index,
    num_shards,
    workers,
    executor_name,
    ray_address,
) -> None:
    """Sample a zh/en subset of a scored parquet corpus to a byte budget and ratio.

    Each row is chosen by a hash of (file, row, seed), so the sample depends on the seed and the data, not on
    --num-shards or --workers (which only split and parallelise the work; --executor ray spreads it on Ray).

    \b
    Example (the course lab's 50 GB sample, 20% Chinese):
      llmctl data sample --input-root /data2/datasets/Ultra-FineWeb-ShaoZW_subset \\
        --out-dir /data2/datasets/pretrain_subset_50GB --train-size-gb 50 \\
        --zh-ratio 0.2 --en-ratio 0.8 --min-score-zh 0.5 --min-score-en 0.5 --target-shard-mb 500
    """
    from .sample import run_sample

    kw = dict(
        input_root=input_root,
        out_dir=out_dir,
        train_size_gb=train_size_gb,
        zh_ratio=zh_ratio,
        en_ratio=en_ratio,
        min_score_zh=min_score_zh,
        min_score_en=min_score_en,
        target_shard_mb=target_shard_mb,
        text_key=text_key,
        lang_key=lang_key,
        score_key=score_key or None,
        seed=seed,
    )
    one = _single_shard(shard_index, num_shards)
    m = run_sample(
        workers=workers,
        num_shards=one[1] if one else num_shards,
        executor=_executor(executor_name, workers, ray_address),
        shard_index=one[0] if one else None,
        **kw,
    )
    _echo_resumed(m)
    shares = ", ".join(
        f"{k} {v['share']:.1%} ({v['bytes']:,} B, {v['rows']:,} rows)" for k, v in m["by_lang"].items()
    )
    click.echo(f"sampled {m['rows']:,} rows, {m['bytes']:,} bytes into {len(m['files'])} files: {shares}")
    if m.get("short"):
        click.echo(
            "note: not enough eligible data for the requested size; sampled less, keeping the ratio "
            "(see manifest 'short')",
            err=True,
        )


@data_group.command("clean", context_settings=CONTEXT)
@_inputs_option
@click.option(
    "--output",
    required=True,
    help="Output directory (part-*.jsonl/parquet + _report.json), or one .jsonl/.parquet file.",
)
@click.option(
    "--rules", default="default", show_default=True, help="'default', 'none', or a YAML rules file."
)
@click.option(
    "--pii",
    type=click.Choice(["mask", "drop", "keep"]),
    default="mask",
    show_default=True,
    help="Mask PII with placeholders, drop documents with PII, or keep (count only).",
)
@_text_key_option
@click.option(
    "--output-format",
    type=click.Choice(["jsonl", "parquet"]),
    default=None,
    help="Default: parquet for parquet input, else jsonl.",
)
@_shard_options
def clean_cmd(
    inputs, output, rules, pii, text_key, output_format, shard_index, num_shards, workers, executor_name, ray_address
) -> None:
    """Rule-based cleaning (length, char ratios, repetition, URLs, keywords, boilerplate) and PII masking.

    \b
    Prints, per rule, how many documents/bytes it removed, split by language.
    Example:
      llmctl data clean --input toy/corpus.jsonl --output toy/clean --pii mask --workers 2
      llmctl data clean --input raw/ --output clean/ --rules my_rules.yaml --shard-index 3 --num-shards 16
    """
    from .clean import run_clean
    from .writers import single_file_target

    one = _single_shard(shard_index, num_shards)
    if one and single_file_target(output):
        raise UserError(
            f"--shard-index: --output must be a directory (one part file per shard), not {output}"
        )
    ex = _executor(executor_name, workers, ray_address)
    r = run_clean(
        inputs, output, rules, pii, text_key, workers, one[1] if one else num_shards, output_format,
        executor=ex, shard_index=one[0] if one else None,
    )
    click.echo(r["summary"])
    _echo_resumed(r)
    if r.get("pii_found"):
        click.echo("PII found: " + ", ".join(f"{k} {v}" for k, v in sorted(r["pii_found"].items())))


def _echo_resumed(report: dict) -> None:
    from .executors import resumed_note

    runs = [report["run"]] if "run" in report else list(report.get("runs", []))
    note = resumed_note(runs)
    if note:
        click.echo(note, err=True)


def _auto_int(value: str) -> int:
    if value in (None, "", "auto"):
        return 0
    try:
        return int(value)
    except ValueError:
        raise UserError(f"expected an integer or 'auto', got '{value}'") from None


@data_group.command("dedup", context_settings=CONTEXT)
@_inputs_option
@click.option(
    "--output",
    required=True,
    help="Output directory (kept documents, _pairs.jsonl, _report.json), or one .jsonl/.parquet file.",
)
@click.option("--exact", is_flag=True, help="Exact duplicates (normalised text hash).")
@click.option("--minhash", is_flag=True, help="Near duplicates (MinHash-LSH). With neither flag, both run.")
@click.option(
    "--threshold", type=float, default=0.8, show_default=True, help="Jaccard similarity for near dups."
)
@click.option("--num-perm", type=int, default=128, show_default=True, help="MinHash permutations.")
@click.option("--ngram", type=int, default=5, show_default=True, help="Shingle size (words; CJK characters).")
@click.option(
    "--bands", default="auto", show_default=True, help="LSH bands (auto: from threshold and num-perm)."
)
@click.option("--rows", default="auto", show_default=True, help="LSH rows per band.")
@click.option("--seed", type=int, default=1, show_default=True, help="MinHash permutation seed.")
@click.option(
    "--phase",
    type=click.Choice(["all", "signatures", "join", "apply"]),
    default="all",
    show_default=True,
    help="Run one phase (cluster use): signatures per shard, join once, apply per shard.",
)
@click.option("--work-dir", default=None, help="Signatures and removal lists (default: OUTPUT/_dedup_work).")
@_text_key_option
@click.option("--output-format", type=click.Choice(["jsonl", "parquet"]), default=None)
@_shard_options
def dedup_cmd(
    inputs,
    output,
    exact,
    minhash,
    threshold,
    num_perm,
    ngram,
    bands,
    rows,
    seed,
    phase,
    work_dir,
    text_key,
    output_format,
    shard_index,
    num_shards,
    workers,
    executor_name,
    ray_address,
) -> None:
    """Remove exact and near duplicates (MinHash-LSH), across all shards, keeping one per cluster.

    Near duplicates: documents sharing an LSH band are candidates, and a candidate pair counts only if its
    estimated Jaccard (fraction of equal MinHash values) is >= --threshold. Documents are then walked in order
    (shard, file, row) and one is removed if an earlier *kept* document is such a neighbour: in a chain A~B~C
    with A not similar to C, B goes and A and C stay. _pairs.jsonl gives each removed document, the kept one it
    matched, and their estimated Jaccard ("jaccard").

    \b
    Example (local, 4 processes; or one Ray task per shard and one for the join):
      llmctl data dedup --input clean/ --output dedup/ --threshold 0.8 --workers 4
      llmctl data dedup --input clean/ --output dedup/ --num-shards 64 --executor ray --ray-address auto
    Example (cluster: 3 phases; signatures and apply as array jobs i = 0..N-1):
      llmctl data dedup --input clean/ --output dedup/ --phase signatures --shard-index $i --num-shards N
      llmctl data dedup --input clean/ --output dedup/ --phase join --num-shards N
      llmctl data dedup --input clean/ --output dedup/ --phase apply --shard-index $i --num-shards N
    """
    from .dedup import DedupParams, run_dedup
    from .pipeline import StageStats
    from .writers import single_file_target

    both = not exact and not minhash
    params = DedupParams(
        exact or both, minhash or both, threshold, num_perm, ngram, _auto_int(bands), _auto_int(rows), seed
    )
    if phase == "all" and shard_index is not None:
        raise UserError("--shard-index needs --phase signatures or apply (the join phase needs every shard)")
    if phase != "all" and single_file_target(output):
        raise UserError(
            f"--phase {phase}: --output must be a directory (one part file per shard), not {output}"
        )
    if phase in ("signatures", "apply") and shard_index is None and num_shards not in (None, 1):
        raise UserError(f"--phase {phase} needs --shard-index (and --num-shards)")
    ex = _executor(executor_name, workers, ray_address)
    r = run_dedup(
        inputs, output, params, text_key, workers, num_shards, work_dir, output_format,
        executor=ex, phase=phase, shard_index=shard_index,
    )
    _echo_resumed(r)
    if phase == "all":
        click.echo(r["summary"])
        click.echo(f"pairs: {r['join']['pairs']}")
    elif phase == "join":
        click.echo(json.dumps({k: v for k, v in r.items() if k not in ("params", "run", "runs")}))
    elif phase == "signatures":
        click.echo(f"shard {shard_index}/{num_shards or 1}: {r['docs']} documents hashed")
    else:
        click.echo(StageStats.from_dict(r["stats"]).summary())


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
    help="sentencepiece: lines sampled for training (bounds memory).",
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
    inputs, output_dir, vocab_size, kind, special_tokens, text_key, character_coverage, max_sentences, seed,
    workers, executor_name, ray_address, num_shards,
) -> None:
    """Train a sentencepiece (byte fallback) or byte-level BPE tokenizer into an HF tokenizer directory.

    \b
    Example:
      llmctl data train-tokenizer --input toy/dedup --output-dir toy/tok --vocab-size 2048 --type spm-bpe \\
        --special-tokens "<|im_start|>,<|im_end|>"
    """
    from .tokenizer_train import train_tokenizer

    specials = [s.strip() for item in special_tokens for s in item.split(",") if s.strip()]
    meta = train_tokenizer(
        inputs, output_dir, vocab_size, kind, specials, text_key, character_coverage, max_sentences, seed,
        num_shards=num_shards, executor=_executor(executor_name, workers, ray_address),
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
    from .tokens import tokenize_corpus

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
        click.echo(f"{split}: {o['documents']:,} documents, {o['tokens']:,} tokens -> {r.prefixes[split]}.bin/.idx")
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
@click.argument("prefix")
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
def inspect_cmd(prefix, tokenizer, samples, bins, as_json) -> None:
    """Documents, tokens, dtype, a length histogram and a decoded sample of a tokenized dataset.

    \b
    Example:
      llmctl data inspect data/toy_train --tokenizer toy/tok
    """
    from .inspect_data import inspect_prefix, render

    info = inspect_prefix(prefix, tokenizer, samples, bins)
    click.echo(json.dumps(info, ensure_ascii=False, indent=2) if as_json else render(info))
