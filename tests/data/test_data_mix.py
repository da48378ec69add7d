"""mix: ratios over domain groups -> the blend pretraining reads; realised shares, epochs, repeat spacing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import write_jsonl
from quality_helpers import code_texts, math_texts, prose_texts

SEQ = 32
RATIOS = "knowledge=0.6,code=0.25,logic=0.15"


def domain_corpus(root, n_prose=900, n_code=60, n_math=60):
    rows = [{"text": t, "domain": "prose"} for t in prose_texts(n_prose)]
    rows += [{"text": t, "domain": "code"} for t in code_texts(n_code)]
    rows += [{"text": t, "domain": "math"} for t in math_texts(n_math)]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    write_jsonl(root / "a.jsonl", rows[::2])
    write_jsonl(root / "b.jsonl", rows[1::2])
    return root


def test_mix_realises_the_ratios_and_spaces_the_repeats(cli, tmp_path, bytelevel_tok):
    corpus = domain_corpus(tmp_path / "in")
    base = [
        "data",
        "mix",
        "--input",
        corpus,
        "--tokenizer",
        bytelevel_tok,
        "--ratios",
        RATIOS,
        "--groups",
        "prose=knowledge,math=logic",
        "--seq-length",
        SEQ,
        "--val-ratio",
        "0.05",
        "--workers",
        "2",
    ]
    code, _out, err = cli(*base, "--output-dir", tmp_path / "sizes")
    assert code == 0, err
    sizes = json.loads((tmp_path / "sizes" / "mix_report.json").read_text())["groups"]
    assert {g: v["documents"] for g, v in sizes.items()} == {"knowledge": 900, "code": 60, "logic": 60}
    train_tokens = int(2 * sizes["code"]["tokens"] / 0.25)  # the small code group is drawn twice
    code, out, err = cli(*base, "--output-dir", tmp_path / "mix", "--train-tokens", train_tokens)
    assert code == 0, err
    print(out)
    report = json.loads((tmp_path / "mix" / "mix_report.json").read_text())
    groups = report["groups"]
    for g, ratio in (("knowledge", 0.6), ("code", 0.25), ("logic", 0.15)):
        assert abs(groups[g]["realised_share"] - ratio) < 0.02, (g, groups[g])
    assert groups["code"]["epochs"] == pytest.approx(2.0, abs=0.05)
    assert groups["knowledge"]["epochs"] < 1 < groups["logic"]["epochs"]
    for g in groups.values():
        assert g["epochs"] == pytest.approx(g["train_tokens"] / g["tokens"], abs=1e-4)
    rep = {s["source"].rsplit("/", 1)[-1]: s for s in report["repeats"]["sources"]}
    for g in ("code", "logic"):  # repeated groups: copies at least half the ideal spacing apart
        assert rep[g]["min_distance_tokens"] >= 0.5 * rep[g]["ideal_distance_tokens"], rep[g]
    assert rep["knowledge"]["min_distance_tokens"] is None
    assert report["repeats"]["min_distance_tokens"] == min(
        rep[g]["min_distance_tokens"] for g in ("code", "logic")
    )
    assert "repeats: min token distance between two copies of a document" in out and "realised" in out
    # what pretraining reads: data.path = blend.yaml, through the bus, realises the same token shares
    from llmctl.core.plugins import lookup

    ds = lookup("datasets", "gpt")(
        str(tmp_path / "mix" / "blend.yaml"),
        seq_len=SEQ,
        num_samples=report["num_samples"],
        seed=1234,
        split="train",
    )
    assert ds.source_names == [str(tmp_path / "mix" / g) for g in ("knowledge", "code", "logic")]
    shares = np.bincount(ds.sample_sources, minlength=3) / len(ds)
    assert np.all(np.abs(shares - [0.6, 0.25, 0.15]) < 0.02)
    val = lookup("datasets", "gpt")(
        str(tmp_path / "mix" / "blend.yaml"), seq_len=SEQ, num_samples=10, seed=1, split="val"
    )
    assert len(val) == 10
    assert not (tmp_path / "mix" / "_mix_work").exists()


def test_mix_bad_ratios_are_one_line_and_write_nothing(cli, tmp_path, bytelevel_tok):
    corpus = domain_corpus(tmp_path / "in", 20, 5, 5)
    for ratios, needle in (
        ("knowledge=0.6,code=0.25,logic=0.1", "--ratios must sum to 1, got 0.6 + 0.25 + 0.1 = 0.95"),
        ("knowledge=1.2", "--ratios: knowledge=1.2 must be in (0, 1]"),
        ("knowledge", "expected NAME=VALUE pairs"),
    ):
        code, _out, err = cli(
            "data",
            "mix",
            "--input",
            corpus,
            "--tokenizer",
            bytelevel_tok,
            "--output-dir",
            tmp_path / "out",
            "--ratios",
            ratios,
        )
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
        assert not (tmp_path / "out").exists()


def test_mix_domain_in_no_group(cli, tmp_path, bytelevel_tok):
    corpus = domain_corpus(tmp_path / "in", 20, 5, 5)
    args = [
        "data",
        "mix",
        "--input",
        corpus,
        "--tokenizer",
        bytelevel_tok,
        "--ratios",
        "knowledge=0.5,code=0.5",
        "--groups",
        "prose=knowledge",
        "--seq-length",
        16,
        "--val-ratio",
        0,
    ]
    code, _out, err = cli(*args, "--output-dir", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "domain 'math' is in no group of --ratios" in err and str(corpus / "a.jsonl") in err
    assert not (tmp_path / "out" / "blend.yaml").exists()
    code, out, err = cli(*args, "--output-dir", tmp_path / "out", "--unmapped", "drop")
    assert code == 0, err
    assert "dropped (domain in no group): math 5" in out
