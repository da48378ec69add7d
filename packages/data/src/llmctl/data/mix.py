"""`llmctl data mix`: a domain-labelled corpus and target ratios -> the blend `llmctl pretrain` reads.

Domains (a `classify` column, or labels the corpus came with) map to groups through `--groups` ("知识 + 代码
+ 逻辑": knowledge, code, logic); a domain named like a group belongs to it. Three steps, each resumable:
  1. split (a stage on the one executor): every document goes to its group's jsonl parts under `_mix_work/`;
  2. tokenize each group into `OUT/<group>_{train,val}` (`llmctl data tokenize`'s stage);
  3. build the blend with the target ratios as weights over `--train-tokens` (default: as many tokens as the
     groups hold) through the very GPT dataset pretraining builds, and measure what it realises: the token
     share and epochs of every group and the smallest distance between two copies of a document.
It writes `OUT/blend.yaml` (pretrain's `data.path`; prefixes relative to it) and `OUT/mix_report.json`.
Ratios are checked before anything is written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmctl.core.errors import UserError
from llmctl.core.io import write_json_atomic, write_text_atomic

from .executors import Executor, ShardDocuments, Shards, ShardStage, run_stage
from .executors.local import LocalExecutor
from .pipeline import make_bar, nbytes, report_progress
from .readers import expand_inputs
from .writers import JsonlWriter, clear_parts

WORK = "_mix_work"


def parse_pairs(spec: str | dict | None, what: str) -> dict[str, str]:
    """`a=x,b=y` (or a mapping) -> {a: x}; a YAML file may map a group to a list of its domains."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        return {str(k): str(v) for k, v in spec.items()}
    if str(spec).endswith((".yaml", ".yml")) and Path(spec).is_file():
        from llmctl.core.config import read_yaml

        data = read_yaml(Path(spec))
        if not isinstance(data, dict):
            raise UserError(f"{spec}: expected a mapping of group: [domains] or domain: group")
        out = {}
        for k, v in data.items():
            for d in v if isinstance(v, list) else [k]:
                out[str(d)] = str(k) if isinstance(v, list) else str(v)
        return out
    out = {}
    for part in str(spec).split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key or not value:
            raise UserError(f"{what} {spec}: expected NAME=VALUE pairs separated by commas, got '{part}'")
        out[key.strip()] = value.strip()
    return out


def parse_ratios(spec: str | dict) -> dict[str, float]:
    """`knowledge=0.6,code=0.25,logic=0.15` -> {group: ratio}; each in (0, 1], summing to 1."""
    ratios = {}
    for group, value in parse_pairs(spec, "--ratios").items():
        try:
            ratios[group] = float(value)
        except ValueError:
            raise UserError(f"--ratios: {group}={value} is not a number") from None
        if not 0 < ratios[group] <= 1:
            raise UserError(f"--ratios: {group}={value} must be in (0, 1]")
    if not ratios:
        raise UserError("--ratios: give at least one group, e.g. knowledge=0.6,code=0.25,logic=0.15")
    total = sum(ratios.values())
    if abs(total - 1.0) > 1e-6:
        terms = " + ".join(f"{v:g}" for v in ratios.values())
        raise UserError(f"--ratios must sum to 1, got {terms} = {total:g}")
    return ratios


class SplitStage(ShardStage):
    """Step 1: each document of the shard, as {"text"}, into `_mix_work/<group>/part-<shard>-k.jsonl`."""

    name = "mix-split"

    def __init__(
        self,
        work: Path,
        groups: dict[str, str],
        ratios: dict[str, float],
        domain_key: str,
        text_key: str | None,
        unmapped: str,
    ):
        self.work, self.groups, self.ratios = Path(work), groups, ratios
        self.domain_key, self.text_key, self.unmapped = domain_key, text_key, unmapped
        self.marker_dir = self.work / "_done"

    def fingerprint(self) -> dict[str, Any]:
        return {
            "groups": self.groups,
            "ratios": sorted(self.ratios),
            "domain_key": self.domain_key,
            "text_key": self.text_key,
            "unmapped": self.unmapped,
        }

    def reset(self, shards: list[int] | None) -> None:
        for g in self.ratios:
            clear_parts(self.work / g, shards)

    def group_of(self, domain: Any, where: str) -> str | None:
        if domain is None:
            raise UserError(
                f"{where}: no domain column '{self.domain_key}' (run `llmctl data classify` with a "
                "domain classifier, or pass --domain-key)"
            )
        domain = str(domain)
        group = self.groups.get(domain, domain if domain in self.ratios else None)
        if group is None and self.unmapped == "error":
            raise UserError(
                f"{where}: domain '{domain}' is in no group of --ratios; map it with --groups "
                f"{domain}=GROUP or pass --unmapped drop"
            )
        return group

    def run(self, documents: ShardDocuments, shard: int, num_shards: int) -> dict[str, Any]:
        writers = {g: JsonlWriter(self.work / g, f"part-{shard:05d}") for g in self.ratios}
        counts = {g: {"docs": 0, "bytes": 0, "domains": {}} for g in self.ratios}
        dropped: dict[str, int] = {}
        bar = make_bar(self.quiet, desc=f"mix: split {shard}/{num_shards}", unit="docs")
        try:
            for doc in documents:
                domain = doc.row.get(self.domain_key)
                group = self.group_of(domain, f"{doc.source}: row {doc.index}")
                if group is None:
                    dropped[str(domain)] = dropped.get(str(domain), 0) + 1
                else:
                    writers[group].write({"text": doc.text})
                    c = counts[group]
                    c["docs"] += 1
                    c["bytes"] += nbytes(doc.text)
                    c["domains"][str(domain)] = c["domains"].get(str(domain), 0) + 1
                bar.update(1)
                report_progress(1)
            for w in writers.values():
                w.close()
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        finally:
            bar.close()
        return {"groups": counts, "dropped": dropped, "empty": documents.stats.dropped_docs}

    def merge(self, reports: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        groups = {g: {"docs": 0, "bytes": 0, "domains": {}} for g in self.ratios}
        dropped: dict[str, int] = {}
        for r in reports:
            for g, c in r["groups"].items():
                groups[g]["docs"] += c["docs"]
                groups[g]["bytes"] += c["bytes"]
                for d, n in c["domains"].items():
                    groups[g]["domains"][d] = groups[g]["domains"].get(d, 0) + n
            for d, n in r["dropped"].items():
                dropped[d] = dropped.get(d, 0) + n
        return {
            "groups": groups,
            "unmapped_dropped": dict(sorted(dropped.items())),
            "empty": sum(r["empty"] for r in reports),
        }


def run_mix(
    inputs: Sequence[str],
    output_dir: str | os.PathLike,
    tokenizer: str,
    ratios: str | dict,
    groups: str | dict | None = None,
    domain_key: str = "domain",
    text_key: str | None = None,
    train_tokens: int | None = None,
    seq_length: int = 2048,
    seed: int = 1234,
    val_ratio: float = 0.01,
    unmapped: str = "error",
    workers: int = 1,
    num_shards: int | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Split, tokenize per group, blend; writes `blend.yaml` and `mix_report.json` into `output_dir`."""
    from .gpt_dataset import build_gpt_dataset
    from .hf_tokenizer import load_tokenizer_info
    from .repeats import repeat_distances
    from .tokens import tokenize_corpus

    target = parse_ratios(ratios)
    mapping = parse_pairs(groups, "--groups")
    unknown = sorted({g for g in mapping.values() if g not in target})
    if unknown:
        raise UserError(f"--groups maps to {', '.join(unknown)}, which --ratios does not name")
    if unmapped not in ("error", "drop"):
        raise UserError(f"--unmapped must be error or drop, got '{unmapped}'")
    if seq_length < 1 or (train_tokens is not None and train_tokens < seq_length):
        raise UserError(f"--train-tokens must be at least --seq-length ({seq_length}), got {train_tokens}")
    load_tokenizer_info(tokenizer)  # a bad tokenizer fails before any work
    files = expand_inputs(inputs)
    out = Path(output_dir)
    executor = executor or LocalExecutor(workers)
    n = num_shards or max(1, executor.workers)
    split = run_stage(
        SplitStage(out / WORK, mapping, target, domain_key, text_key, unmapped),
        files,
        None,
        Shards(n),
        executor,
    )
    empty = [g for g in target if not split["groups"][g]["docs"]]
    if empty:
        raise UserError(
            f"--ratios: no documents fall in group(s) {', '.join(empty)} "
            f"(groups found: {', '.join(g for g in target if g not in empty) or 'none'})"
        )
    tokens: dict[str, dict[str, Any]] = {}
    for g in target:
        res = tokenize_corpus(
            [str(out / WORK / g)],
            tokenizer,
            str(out / g),
            text_key="text",
            val_ratio=val_ratio,
            seed=seed,
            num_shards=n,
            executor=executor,
        )
        tokens[g] = {s: o["tokens"] for s, o in res.report["outputs"].items()}
    total = train_tokens or sum(t["train"] for t in tokens.values())
    num_samples = max(1, total // seq_length)
    blend = build_gpt_dataset([(str(out / g), w) for g, w in target.items()], seq_length, num_samples, seed)
    samples = np.bincount(np.asarray(blend.sample_sources), minlength=len(target))
    report = _report(target, split, tokens, samples, seq_length, num_samples, seed, repeat_distances(blend))
    write_text_atomic(out / "blend.yaml", _blend_yaml(target, report))
    write_json_atomic(out / "mix_report.json", report)
    shutil.rmtree(out / WORK, ignore_errors=True)
    return report


def _report(target, split, tokens, samples, seq_length, num_samples, seed, repeats) -> dict[str, Any]:
    groups = {}
    for s, (g, ratio) in enumerate(target.items()):
        drawn = int(samples[s]) * seq_length
        groups[g] = {
            "ratio": ratio,
            "domains": split["groups"][g]["domains"],
            "documents": split["groups"][g]["docs"],
            "tokens": tokens[g]["train"],
            "val_tokens": tokens[g].get("val", 0),
            "train_tokens": drawn,
            "realised_share": drawn / (num_samples * seq_length),
            "epochs": round(drawn / tokens[g]["train"], 4),
        }
    return {
        "groups": groups,
        "train_tokens": num_samples * seq_length,
        "seq_length": seq_length,
        "num_samples": num_samples,
        "seed": seed,
        "unmapped_dropped": split["unmapped_dropped"],
        "empty_documents": split["empty"],
        "repeats": repeats,
        "megatron_blend": " ".join(f"{r:g} {g}" for g, r in target.items()),
    }


def _blend_yaml(target: dict[str, float], report: dict[str, Any]) -> str:
    lines = [
        "# written by `llmctl data mix`: give this file to `llmctl pretrain` as data.path",
        f"# realised over {report['train_tokens']} tokens at seq_length {report['seq_length']}, seed "
        f"{report['seed']} (see mix_report.json)",
        "blend:",
    ]
    lines += [f"  - {{prefix: {g}, weight: {r}}}" for g, r in target.items()]
    return "\n".join(lines) + "\n"


def format_report(report: dict[str, Any]) -> str:
    """The table the CLI prints: per group its ratio, realised token share, epochs and size."""
    lines = [
        f"{'group':<14}{'ratio':>8}{'realised':>10}{'epochs':>9}{'tokens':>14}{'documents':>11}  domains"
    ]
    for g, v in report["groups"].items():
        doms = ", ".join(f"{d} {n}" for d, n in sorted(v["domains"].items()))
        lines.append(
            f"{g:<14}{v['ratio']:>8.3f}{v['realised_share']:>10.3f}{v['epochs']:>9.2f}"
            f"{v['tokens']:>14,}{v['documents']:>11,}  {doms}"
        )
    rep = report["repeats"]
    if rep["min_distance_tokens"] is None:
        lines.append("repeats: no document appears twice in the blend")
    else:
        parts = [
            f"{Path(s['source']).name} {s['min_distance_tokens']:,} (ideal {s['ideal_distance_tokens']:,})"
            for s in rep["sources"]
            if s["min_distance_tokens"] is not None
        ]
        lines.append(
            f"repeats: min token distance between two copies of a document {rep['min_distance_tokens']:,}"
            f"; per group: {', '.join(parts)}"
        )
    if report["unmapped_dropped"]:
        lines.append(
            "dropped (domain in no group): "
            + ", ".join(f"{d} {n}" for d, n in report["unmapped_dropped"].items())
        )
    return "\n".join(lines)
