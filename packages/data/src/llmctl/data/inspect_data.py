"""`llmctl data inspect`: what is in a tokenized MMIDIDX dataset (counts, dtype, length histogram, a sample),
and which documents training samples hold (`--positions`: the sample positions a loss-spike event logs, in
the blend pretraining built from the same blend, length, sample count and seed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from llmctl.core.mmidx import IndexedDataset, exists


def inspect_prefix(
    prefix: str,
    tokenizer: str | None = None,
    samples: int = 1,
    bins: int = 10,
    max_sample_tokens: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Statistics of `prefix` (tries `prefix_train` when `prefix` itself is not a dataset)."""
    if not exists(prefix) and exists(f"{prefix}_train"):
        prefix = f"{prefix}_train"
    ds = IndexedDataset(prefix)
    lengths = np.asarray(ds.sequence_lengths, dtype=np.int64)
    info: dict[str, Any] = {
        "prefix": prefix,
        "documents": ds.num_documents,
        "sequences": len(ds),
        "tokens": int(lengths.sum()),
        "dtype": ds.dtype.name,
        "length": {
            "min": int(lengths.min()) if len(lengths) else 0,
            "max": int(lengths.max()) if len(lengths) else 0,
            "mean": float(lengths.mean()) if len(lengths) else 0.0,
            "p50": float(np.percentile(lengths, 50)) if len(lengths) else 0.0,
            "p99": float(np.percentile(lengths, 99)) if len(lengths) else 0.0,
        },
        "max_token_id": int(
            max((int(ds[i].max()) for i in range(min(len(ds), 1000)) if lengths[i]), default=-1)
        ),
    }
    if len(lengths):
        edges = np.unique(
            np.geomspace(max(1, lengths.min()), max(2, lengths.max() + 1), bins + 1).astype(np.int64)
        )
        counts, edges = np.histogram(lengths, bins=edges)
        info["histogram"] = [
            {"from": int(a), "to": int(b), "count": int(c)} for a, b, c in zip(edges, edges[1:], counts)
        ]
    if samples and len(ds):
        rng = np.random.default_rng(seed)
        picks = sorted(rng.choice(len(ds), size=min(samples, len(ds)), replace=False).tolist())
        info["samples"] = []
        tok = None
        if tokenizer:
            from .hf_tokenizer import load_tokenizer_info

            tok = load_tokenizer_info(tokenizer).load()
        for i in picks:
            ids = ds[i][:max_sample_tokens].tolist()
            entry: dict[str, Any] = {"index": i, "length": int(lengths[i]), "ids": ids[:32]}
            if tok is not None:
                entry["text"] = tok.decode(ids, skip_special_tokens=False)
            info["samples"].append(entry)
    return info


def render(info: dict[str, Any]) -> str:
    lines = [
        f"{info['prefix']}: {info['documents']:,} documents, {info['sequences']:,} sequences, "
        f"{info['tokens']:,} tokens, dtype {info['dtype']}, max token id (first 1000 docs) {info['max_token_id']}",
        "length: " + ", ".join(f"{k} {v:,.0f}" for k, v in info["length"].items()),
    ]
    hist = info.get("histogram", [])
    if hist:
        top = max(h["count"] for h in hist) or 1
        lines.append("length histogram (tokens per document):")
        for h in hist:
            bar = "#" * int(round(40 * h["count"] / top))
            lines.append(f"  {h['from']:>8,}-{h['to']:<8,} {h['count']:>9,} {bar}")
    for s in info.get("samples", []):
        lines.append(f"sample document {s['index']} ({s['length']} tokens): ids {s['ids']}")
        if "text" in s:
            lines.append("  " + repr(s["text"]))
    return "\n".join(lines)


def inspect_positions(spec: Any, positions: str, seq_length: int, num_samples: int, seed: int = 1234,
                      tokenizer: str | None = None, max_text_tokens: int = 64,
                      curriculum: dict | None = None) -> dict[str, Any]:
    """Samples A..B-1 (`positions` "A:B", or one "A") of the training blend: source, documents and text.
    A position past the dataset's end wraps around, as the trainer reads it."""
    import json

    from llmctl.core.errors import UserError

    from .gpt_dataset import build_gpt_dataset

    try:
        a, _, b = positions.partition(":")
        start, end = int(a), int(b) if b else int(a) + 1
    except ValueError:
        raise UserError(f"--positions {positions}: expected A:B (sample positions), e.g. 120:128") from None
    if not 0 <= start < end:
        raise UserError(f"--positions {positions}: need 0 <= A < B")
    if isinstance(spec, str) and spec.lstrip().startswith(("[", "{")):
        spec = json.loads(spec)  # a blend logged as a list or mapping
    ds = build_gpt_dataset(spec, seq_length, num_samples, seed, "train", curriculum=curriculum)
    tok = None
    if tokenizer:
        from .hf_tokenizer import load_tokenizer_info

        tok = load_tokenizer_info(tokenizer).load()
    out = []
    for p in range(start, end):
        where = ds.locate(p % len(ds))
        where["position"] = p
        if tok is not None:
            ids = ds[p % len(ds)]["tokens"][:max_text_tokens].tolist()
            where["text"] = tok.decode(ids, skip_special_tokens=False)
        out.append(where)
    return {"positions": [start, end], "seq_length": seq_length, "num_samples": num_samples, "seed": seed,
            "samples": out}


def render_positions(info: dict[str, Any]) -> str:
    lines = [f"samples {info['positions'][0]}..{info['positions'][1] - 1} (seq_length {info['seq_length']}, "
             f"{info['num_samples']:,} samples, seed {info['seed']}):"]
    for s in info["samples"]:
        docs = ", ".join(f"document {d['document']} tokens {d['from']}-{d['to']}" for d in s["documents"])
        lines.append(f"  position {s['position']}: {s['prefix']} sample {s['sample']}: {docs}")
        if "text" in s:
            lines.append("    " + repr(s["text"]))
    return "\n".join(lines)
