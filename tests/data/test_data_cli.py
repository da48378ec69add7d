"""The `llmctl data` CLI: every reader format, help texts, and bad input as one-line errors (exit 2)."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import run_cli, run_tokenize, write_jsonl

from llmctl.core.mmidx import IndexedDataset

COMMANDS = ["synth", "sample", "clean", "dedup", "train-tokenizer", "tokenize", "inspect", "merge"]
DOCS = ["first document, in English.", "第二篇文档，中文。", "third: 3 + 4 = 7", "fourth 😀 emoji"]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help_with_an_example(cmd):
    res = run_cli(["data", cmd, "--help"])
    assert res.exit_code == 0 and "Example" in res.output and f"llmctl data {cmd}" in res.output


def _all_formats(d):
    write_jsonl(d / "a.jsonl", [{"text": t} for t in DOCS])
    (d / "b.json").write_text(json.dumps([{"text": t} for t in DOCS], ensure_ascii=False), encoding="utf-8")
    with open(d / "c.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows([[i, t] for i, t in enumerate(DOCS)])
    (d / "d.txt").write_text("\n".join(DOCS) + "\n\n", encoding="utf-8")
    pq.write_table(pa.table({"text": DOCS}), d / "e.parquet")


def test_every_reader_format_tokenizes_to_the_same_documents(tmp_path, bytelevel_tok):
    from llmctl.data.hf_tokenizer import load_tokenizer_info

    (tmp_path / "in").mkdir()
    _all_formats(tmp_path / "in")
    (tmp_path / "in" / "_report.json").write_text("{}")  # stage reports in a directory are not corpus files
    res = run_tokenize(tmp_path / "in", bytelevel_tok, tmp_path / "out" / "all", "--val-ratio", "0")
    assert res.exit_code == 0, res.output
    ds = IndexedDataset(tmp_path / "out" / "all_train")
    tok = load_tokenizer_info(bytelevel_tok).load()
    assert ds.num_documents == 5 * len(DOCS)
    for i in range(len(ds)):
        assert tok.decode(ds[i].tolist()[:-1]) == DOCS[i % len(DOCS)]
    assert not (tmp_path / "out" / "all_val.idx").exists()


def test_empty_documents_are_counted_and_skipped(tmp_path, bytelevel_tok):
    write_jsonl(
        tmp_path / "in.jsonl",
        [{"text": "one"}, {"text": ""}, {"text": "  \n "}, {"text": None}, {"text": "two"}],
    )
    res = run_tokenize(tmp_path / "in.jsonl", bytelevel_tok, tmp_path / "o", "--val-ratio", "0")
    assert res.exit_code == 0, res.output
    assert "skipped 3 empty documents" in res.output
    assert IndexedDataset(tmp_path / "o_train").num_documents == 2
    report = json.loads((tmp_path / "o_tokenize.json").read_text())
    assert report["skipped"] == {"empty": 3}


def _one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])


def test_non_utf8_and_invalid_json_lines_name_file_and_line(tmp_path, bytelevel_tok):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    args = ["data", "tokenize", "--tokenizer", bytelevel_tok, "--output-prefix", tmp_path / "o"]
    _one_line_error(run_cli(args + ["--input", bad]), f"{bad}:2", "not UTF-8")
    bad.write_text('{"text": "fine"}\n\n{"text": oops}\n')
    _one_line_error(run_cli(args + ["--input", bad]), f"{bad}:3", "invalid JSON")
    _one_line_error(run_cli(["data", "clean", "--input", bad, "--output", tmp_path / "c"]), f"{bad}:3")


def test_missing_text_column_names_file_and_columns(tmp_path, bytelevel_tok):
    write_jsonl(tmp_path / "in.jsonl", [{"body": "x", "id": 1}])
    res = run_tokenize(tmp_path / "in.jsonl", bytelevel_tok, tmp_path / "o", "--json-keys", "text")
    _one_line_error(res, tmp_path / "in.jsonl", "no text column 'text'", "body")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "p.parquet")
    res = run_cli(["data", "dedup", "--input", tmp_path / "p.parquet", "--output", tmp_path / "d"])
    _one_line_error(res, tmp_path / "p.parquet", "'text' or 'content'")


def test_corrupt_parquet_names_the_file(tmp_path, bytelevel_tok):
    bad = tmp_path / "broken.parquet"
    pq.write_table(pa.table({"text": DOCS * 50}), bad)
    bad.write_bytes(bad.read_bytes()[:200] + b"\x00" * 64 + bad.read_bytes()[264:])
    res = run_tokenize(bad, bytelevel_tok, tmp_path / "o")
    _one_line_error(res, bad, "parquet")
    bad.write_bytes(b"garbage")
    _one_line_error(run_cli(["data", "clean", "--input", bad, "--output", tmp_path / "c"]), bad, "parquet")


def test_uint16_with_a_vocab_over_65535_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)}
    vocab.update({"<unk>": 70_000, "</s>": 70_001})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp_path / "big").mkdir()
    tok.save(str(tmp_path / "big" / "tokenizer.json"))
    (tmp_path / "big" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    write_jsonl(tmp_path / "in.jsonl", [{"text": "w1 w69999 w5"}])
    args = [
        "data",
        "tokenize",
        "--input",
        tmp_path / "in.jsonl",
        "--tokenizer",
        tmp_path / "big",
        "--output-prefix",
        tmp_path / "o",
        "--val-ratio",
        "0",
    ]
    _one_line_error(run_cli(args + ["--dtype", "uint16"]), "uint16", "70002")
    assert run_cli(args).exit_code == 0  # auto picks int32
    ds = IndexedDataset(tmp_path / "o_train")
    assert ds.dtype.name == "int32" and ds[0].tolist() == [1, 69_999, 5, 70_001]


def test_missing_input_and_bad_shard_flags(tmp_path):
    _one_line_error(
        run_cli(["data", "clean", "--input", tmp_path / "nope.jsonl", "--output", tmp_path / "o"]),
        "nope.jsonl",
    )
    write_jsonl(tmp_path / "in.jsonl", [{"text": "hello world, a document"}])
    _one_line_error(
        run_cli(
            [
                "data",
                "clean",
                "--input",
                tmp_path / "in.jsonl",
                "--output",
                tmp_path / "o",
                "--shard-index",
                "3",
                "--num-shards",
                "2",
            ]
        ),
        "--shard-index",
    )


def test_inspect_shows_counts_histogram_and_a_decoded_sample(tmp_path, bytelevel_tok):
    write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in DOCS])
    assert (
        run_tokenize(tmp_path / "in.jsonl", bytelevel_tok, tmp_path / "o", "--val-ratio", "0").exit_code == 0
    )
    res = run_cli(["data", "inspect", tmp_path / "o", "--tokenizer", bytelevel_tok, "--samples", "4"])
    assert res.exit_code == 0, res.output
    assert "4 documents" in res.output and "dtype uint16" in res.output and "histogram" in res.output
    assert all(repr(t + "</s>") in res.output for t in DOCS)
    info = json.loads(run_cli(["data", "inspect", f"{tmp_path}/o_train", "--json"]).output)
    assert (
        info["documents"] == 4
        and info["tokens"] == sum(h["count"] for h in info["histogram"]) * 0 + info["tokens"]
    )


def test_synth_is_deterministic_and_planted_items_are_cleaned(tmp_path):
    for name in ("a", "b"):
        assert (
            run_cli(["data", "synth", "--out-dir", tmp_path / name, "--docs", "300", "--seed", "4"]).exit_code
            == 0
        )
    assert (tmp_path / "a" / "corpus.jsonl").read_bytes() == (tmp_path / "b" / "corpus.jsonl").read_bytes()
    mc = list(csv.reader(open(tmp_path / "a" / "mc" / "test" / "toyfacts_test.csv", encoding="utf-8")))
    assert len(mc) == 60 and all(len(r) == 6 and r[5] in "ABCD" for r in mc)
    assert (tmp_path / "a" / "mc" / "dev" / "toyfacts_dev.csv").is_file()
    planted = json.loads((tmp_path / "a" / "_synth.json").read_text())["planted"]
    assert (
        run_cli(
            [
                "data",
                "clean",
                "--input",
                tmp_path / "a" / "corpus.jsonl",
                "--output",
                tmp_path / "clean.jsonl",
            ]
        ).exit_code
        == 0
    )
    assert (
        run_cli(
            ["data", "dedup", "--input", tmp_path / "clean.jsonl", "--output", tmp_path / "dedup.jsonl"]
        ).exit_code
        == 0
    )
    cleaned = [json.loads(x) for x in open(tmp_path / "clean.jsonl", encoding="utf-8")]
    ids = {r["id"] for r in cleaned}
    assert not {"dirty-short-en", "dirty-short-zh", "dirty-url-spam"} & ids
    assert "<EMAIL>" in next(r["text"] for r in cleaned if r["id"] == "dirty-email")
    deduped = {json.loads(x)["id"] for x in open(tmp_path / "dedup.jsonl", encoding="utf-8")}
    copies = {**planted["exact_duplicates"], **planted["near_duplicates"]}
    assert len(copies) == 10 and not set(copies) & deduped  # every planted copy removed ...
    assert set(copies.values()) <= deduped  # ... and its original kept


def test_sharded_tokenize_then_merge_has_every_document(tmp_path, bytelevel_tok):
    write_jsonl(tmp_path / "in.jsonl", [{"text": f"document {i}: " + DOCS[i % 4]} for i in range(40)])
    base = [
        "data",
        "tokenize",
        "--input",
        tmp_path / "in.jsonl",
        "--tokenizer",
        bytelevel_tok,
        "--val-ratio",
        "0.2",
    ]
    assert run_cli(base + ["--output-prefix", tmp_path / "whole"]).exit_code == 0
    for i in range(3):
        res = run_cli(
            base + ["--output-prefix", tmp_path / "s", "--shard-index", str(i), "--num-shards", "3"]
        )
        assert res.exit_code == 0, res.output
    for split in ("train", "val"):
        parts = [f"{tmp_path}/s-{i:05d}-of-00003_{split}" for i in range(3)]
        res = run_cli(
            ["data", "merge", "--input", ",".join(parts), "--output-prefix", tmp_path / f"m_{split}"]
        )
        assert res.exit_code == 0, res.output
        whole, merged = IndexedDataset(tmp_path / f"whole_{split}"), IndexedDataset(tmp_path / f"m_{split}")
        assert sorted(map(tuple, merged[0 : len(merged)])) == sorted(map(tuple, whole[0 : len(whole)]))
