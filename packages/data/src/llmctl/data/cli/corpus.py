"""`llmctl data synth | sample | clean | dedup`: the corpus-shaping commands."""

from __future__ import annotations

import json

import click
from llmctl.core.errors import UserError

from . import data_group
from .common import (
    CONTEXT,
    _auto_int,
    _echo_resumed,
    _executor,
    _inputs_option,
    _shard_options,
    _single_shard,
    _text_key_option,
)


@data_group.command("synth", context_settings=CONTEXT)
@click.option(
    "--out-dir", required=True, type=click.Path(file_okay=False), help="Where to write the toy corpus."
)
@click.option("--docs", type=int, default=2000, show_default=True, help="Number of regular documents.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--layout", type=click.Choice(["jsonl", "ultrafineweb"]), default="jsonl", show_default=True,
              help="jsonl: OUT/corpus.jsonl. ultrafineweb: OUT/ultrafineweb/{zh,en}/*.parquet with content and "
                   "score columns (what `data sample` reads, as in the course lab).")
def synth_cmd(out_dir: str, docs: int, seed: int, layout: str) -> None:
    """Write a small deterministic zh+en toy corpus and an MMLU-layout multiple-choice set.

    \b
    Writes OUT/corpus.jsonl (id, text, lang), OUT/mc/{dev,test}/toyfacts_{dev,test}.csv, OUT/_synth.json.
    Example:
      llmctl data synth --out-dir toy --docs 2000 --seed 0
      llmctl data synth --out-dir toy --layout ultrafineweb   # toy/ultrafineweb/{zh,en}/part-*.parquet
    """
    from ..synth import synth_corpus

    if docs < 1:
        raise UserError(f"--docs must be >= 1, got {docs}")
    s = synth_corpus(out_dir, docs, seed, layout=layout)
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
    from ..sample import run_sample

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
    inputs,
    output,
    rules,
    pii,
    text_key,
    output_format,
    shard_index,
    num_shards,
    workers,
    executor_name,
    ray_address,
) -> None:
    """Rule-based cleaning (length, char ratios, repetition, URLs, keywords, boilerplate) and PII masking.

    \b
    Prints, per rule, how many documents/bytes it removed, split by language.
    Example:
      llmctl data clean --input toy/corpus.jsonl --output toy/clean --pii mask --workers 2
      llmctl data clean --input raw/ --output clean/ --rules my_rules.yaml --shard-index 3 --num-shards 16
    """
    from ..clean import run_clean
    from ..writers import single_file_target

    one = _single_shard(shard_index, num_shards)
    if one and single_file_target(output):
        raise UserError(
            f"--shard-index: --output must be a directory (one part file per shard), not {output}"
        )
    ex = _executor(executor_name, workers, ray_address)
    r = run_clean(
        inputs,
        output,
        rules,
        pii,
        text_key,
        workers,
        one[1] if one else num_shards,
        output_format,
        executor=ex,
        shard_index=one[0] if one else None,
    )
    click.echo(r["summary"])
    _echo_resumed(r)
    if r.get("pii_found"):
        click.echo("PII found: " + ", ".join(f"{k} {v}" for k, v in sorted(r["pii_found"].items())))


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
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check each LSH candidate pair by estimated Jaccard >= --threshold (default). --no-verify: every band "
    "match is a duplicate edge and each connected cluster keeps only its first document (datatrove / "
    "NeMo-Curator semantics: faster, more false positives). A join option: changing it reruns only the join.",
)
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
    verify,
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
    estimated Jaccard (fraction of equal MinHash values) is >= --threshold. Documents are then walked in input
    order (file, row; the same for any shard count) and one is removed if an earlier *kept* document is such a
    neighbour: in a chain A~B~C
    with A not similar to C, B goes and A and C stay. _pairs.jsonl gives each removed document, the kept one it
    matched, and their estimated Jaccard ("jaccard").

    With --no-verify, band matches are not checked: documents linked by any chain of shared bands form a
    cluster (union-find) and all but its first document are removed, as datatrove and NeMo-Curator do (A, B
    and C above: B and C go). Faster, and removes LSH false positives too; the "jaccard" in _pairs.jsonl
    (against the cluster's first document) can then be below --threshold.

    \b
    Example (local, 4 processes; or one Ray task per shard and one for the join):
      llmctl data dedup --input clean/ --output dedup/ --threshold 0.8 --workers 4
      llmctl data dedup --input clean/ --output dedup/ --num-shards 64 --executor ray --ray-address auto
      llmctl data dedup --input clean/ --output dedup/ --minhash --no-verify   # datatrove-style clusters
    Example (cluster: 3 phases; signatures and apply as array jobs i = 0..N-1):
      llmctl data dedup --input clean/ --output dedup/ --phase signatures --shard-index $i --num-shards N
      llmctl data dedup --input clean/ --output dedup/ --phase join --num-shards N
      llmctl data dedup --input clean/ --output dedup/ --phase apply --shard-index $i --num-shards N
    """
    from ..dedup import DedupParams, run_dedup
    from ..pipeline import StageStats
    from ..writers import single_file_target

    both = not exact and not minhash
    params = DedupParams(
        exact or both, minhash or both, threshold, num_perm, ngram, _auto_int(bands), _auto_int(rows), seed, verify
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
        inputs,
        output,
        params,
        text_key,
        workers,
        num_shards,
        work_dir,
        output_format,
        executor=ex,
        phase=phase,
        shard_index=shard_index,
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
