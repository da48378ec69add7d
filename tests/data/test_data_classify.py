"""classify: a stage on the one executor (same bytes local, Ray and any shard count; SIGKILL then rerun = an
uninterrupted run), several classifiers in one pass, the per-language/per-domain report, and the columns
feeding `sample --min-score-*` and the `score` cleaning rule."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from data_helpers import read_jsonl, write_jsonl
from quality_helpers import chinese_texts, code_texts, math_texts, prose_texts, spam_texts
from test_data_executors import _llmctl, outputs, same_report

from llmctl.data.classifiers.stage import run_classify

pytest.importorskip("fasttext")


def _local(workers: int = 2):
    from llmctl.data.executors.local import LocalExecutor

    return LocalExecutor(workers)


def mixed_corpus(root: Path, files: int = 3, per_kind: int = 30, seed: int = 0) -> dict[str, str]:
    """`files` jsonl files of prose, spam, code, math and Chinese rows (each says its kind); {text: kind}."""
    r = random.Random(seed)
    rows = [
        {"text": t, "kind": k}
        for k, texts in (
            ("prose", prose_texts(per_kind)),
            ("spam", spam_texts(per_kind, seed=7)),
            ("code", code_texts(per_kind)),
            ("math", math_texts(per_kind)),
            ("zh", chinese_texts(per_kind)),
        )
        for t in texts
    ]
    r.shuffle(rows)
    for f in range(files):
        write_jsonl(root / f"part-{f}.jsonl", rows[f::files])
    return {x["text"]: x["kind"] for x in rows}


def test_classify_local_ray_and_any_shard_count_are_byte_identical(
    tmp_path, ray_executor, fasttext_quality, fasttext_domain
):
    mixed_corpus(tmp_path / "in")
    clfs = [(str(fasttext_quality), None), (str(fasttext_domain), None)]
    kw = dict(batch_size=8, rows_per_file=20)
    runs = {"one": (1, _local(1)), "local": (4, _local(2)), "ray": (4, ray_executor), "two": (2, _local(2))}
    reports = {}
    for name, (n, ex) in runs.items():  # 3 files: 4 shards take slabs round-robin, 2 shards take whole files
        reports[name] = run_classify(
            [tmp_path / "in"], tmp_path / name, clfs, num_shards=n, executor=ex, **kw
        )
        assert reports[name]["run"]["executor"] == ("ray" if name == "ray" else "local")
    assert len(reports["one"]["files"]) == 9 and sum(f["rows"] for f in reports["one"]["files"]) == 150
    for name in ("local", "ray", "two"):
        assert outputs(tmp_path / name) == outputs(tmp_path / "one"), name
        assert same_report(reports[name], reports["one"], tmp_path / name, tmp_path / "one"), name
    row = read_jsonl(tmp_path / "one" / "part-0-00000.jsonl")[0]
    assert set(row) == {"text", "kind", "quality_score", "domain", "domain_score"}


def test_bert_scores_do_not_depend_on_the_shard_count(tmp_path, quality_set):
    pytest.importorskip("torch")
    from llmctl.data.classifiers.train import train_classifier

    clf = tmp_path / "bert"
    train_classifier(
        [str(quality_set)],
        clf,
        arch="bert",
        quiet=True,
        options={"max_length": 64, "epoch": 1, "threads": 1, "vocab_size": 1000},
    )
    mixed_corpus(tmp_path / "in", files=2, per_kind=12)
    for name, n in (("one", 1), ("three", 3)):
        run_classify(
            [tmp_path / "in"],
            tmp_path / name,
            [(str(clf), "bert_q")],
            batch_size=8,
            rows_per_file=16,
            num_shards=n,
            executor=_local(1),
        )
    assert outputs(tmp_path / "three") == outputs(tmp_path / "one")
    assert all("bert_q" in r for r in read_jsonl(tmp_path / "one" / "part-0-00000.jsonl"))


def test_classify_killed_midway_resumes_to_the_uninterrupted_output(tmp_path, fasttext_quality):
    mixed_corpus(tmp_path / "in", files=4, per_kind=8)  # 4 files of 10 rows; a shard is a file of 2 slabs
    base = [
        "data",
        "classify",
        "--input",
        tmp_path / "in",
        "--classifier",
        fasttext_quality,
        "--num-shards",
        "4",
        "--batch-size",
        "5",
        "--rows-per-file",
        "5",
    ]
    whole = _llmctl(*base, "--output", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    killed = _llmctl(*base, "--output", tmp_path / "r", kill="llmctl.data.classifiers.stage:ClassifyStage")
    assert killed.returncode == -9  # shard 2 died after its second batch: slab 0 written, slab 1 half done
    assert (tmp_path / "r" / "part-2-00000.jsonl").is_file() and list(
        (tmp_path / "r").glob(".part-2-00001*.tmp")
    )
    assert not (tmp_path / "r" / "_report.json").exists()
    again = _llmctl(*base, "--output", tmp_path / "r")
    assert again.returncode == 0, again.stderr
    assert "resumed: skipped completed shards (classify 2/4)" in again.stderr
    assert not list((tmp_path / "r").rglob("*.tmp"))
    assert outputs(tmp_path / "r") == outputs(tmp_path / "whole")
    assert same_report(
        json.loads((tmp_path / "r" / "_report.json").read_text()),
        json.loads((tmp_path / "whole" / "_report.json").read_text()),
        tmp_path / "r",
        tmp_path / "whole",
    )


def test_report_per_language_and_domain_is_printed(cli, tmp_path, fasttext_quality, fasttext_domain):
    kinds = mixed_corpus(tmp_path / "in", per_kind=40)
    code, out, err = cli(
        "data",
        "classify",
        "--input",
        tmp_path / "in",
        "--classifier",
        fasttext_quality,
        "--classifier",
        fasttext_domain,
        "--output",
        tmp_path / "out",
        "--sample-out",
        tmp_path / "examples.jsonl",
        "--sample-k",
        "3",
    )
    assert code == 0, err
    print(out)  # the table a user sees: quality per language and per predicted domain
    for line in (
        "[quality_score]",
        "lang=en",
        "lang=zh",
        "domain=code",
        "domain=math",
        "domain=prose",
        "[domain_score]",
        "wrote 200 rows into 3 files",
    ):
        assert line in out, line
    report = json.loads((tmp_path / "out" / "_report.json").read_text())
    rows = [r for f in sorted((tmp_path / "out").glob("*.jsonl")) for r in read_jsonl(f)]
    by_lang = report["scores"]["quality_score"]["by_lang"]
    assert by_lang["zh"]["docs"] == 40 and by_lang["en"]["docs"] == 160
    # what the table says per domain is what the rows hold (means exact, quantiles to the 1/1000 bins)
    for domain, summary in report["scores"]["quality_score"]["by_domain"].items():
        scores = np.array([r["quality_score"] for r in rows if r["domain"] == domain])
        assert summary["docs"] == len(scores) and summary["mean"] == pytest.approx(scores.mean(), abs=1e-6)
        for q in (0.05, 0.5, 0.95):
            ref = np.quantile(scores, q, method="inverted_cdf")
            assert abs(summary[f"p{int(q * 100):02d}"] - ref) <= 0.0015, (domain, q)
    # and it shows what this scorer (prose vs web spam, English) does to Chinese: pushes it to the floor
    assert by_lang["zh"]["p95"] < 0.2 < by_lang["en"]["mean"]
    predicted = {(kinds[r["text"]], r["domain"]) for r in rows}
    assert ("code", "code") in predicted and ("math", "math") in predicted and ("prose", "prose") in predicted
    examples = read_jsonl(tmp_path / "examples.jsonl")
    assert {(e["column"], e["end"]) for e in examples} == {
        (c, e) for c in ("quality_score", "domain_score") for e in ("lowest", "highest")
    }
    lowest = [e for e in examples if e["column"] == "quality_score" and e["end"] == "lowest"]
    assert len(lowest) == 3 and all(kinds[x["text"]] != "prose" for x in lowest)
    assert all(e["source"].startswith(str(tmp_path / "in")) for e in examples)


def test_classify_output_feeds_sample_min_score(cli, tmp_path, fasttext_quality):
    import pyarrow as pa
    import pyarrow.parquet as pq

    prose, spam = prose_texts(150), spam_texts(150, seed=3)
    (tmp_path / "in" / "en").mkdir(parents=True)
    (tmp_path / "in" / "zh").mkdir(parents=True)
    en = prose + spam
    random.Random(0).shuffle(en)
    pq.write_table(pa.table({"text": en, "id": list(range(len(en)))}), tmp_path / "in" / "en" / "web.parquet")
    pq.write_table(pa.table({"text": chinese_texts(100)}), tmp_path / "in" / "zh" / "web.parquet")
    code, _out, err = cli(
        "data",
        "classify",
        "--input",
        tmp_path / "in",
        "--classifier",
        fasttext_quality,
        "--output",
        tmp_path / "scored",
        "--rows-per-file",
        "200",
    )
    assert code == 0, err
    assert sorted(
        str(p.relative_to(tmp_path / "scored")) for p in (tmp_path / "scored").rglob("*.parquet")
    ) == ["en/web-00000.parquet", "en/web-00001.parquet", "zh/web-00000.parquet"]
    assert pq.read_schema(tmp_path / "scored" / "en" / "web-00000.parquet").field("id").type == pa.int64()

    def sampled(min_en: float) -> list[str]:
        out = tmp_path / f"sample_{min_en}"
        code, _o, err = cli(
            "data",
            "sample",
            "--input-root",
            tmp_path / "scored",
            "--out-dir",
            out,
            "--train-size-gb",
            0.0002,
            "--zh-ratio",
            0.2,
            "--en-ratio",
            0.8,
            "--score-key",
            "quality_score",
            "--min-score-en",
            min_en,
            "--target-shard-mb",
            1,
        )
        assert code == 0, err
        t = pq.read_table([str(p) for p in sorted(out.glob("part-*.parquet"))])
        return [
            (x, s)
            for x, s, lang in zip(t["text"].to_pylist(), t["score"].to_pylist(), t["lang"].to_pylist())
            if lang == "en"
        ]

    scored = {
        r["text"]: r["quality_score"]
        for f in sorted((tmp_path / "scored" / "en").glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    }
    loose, strict = sampled(0.0), sampled(0.5)
    assert all(scored[x] == s for x, s in loose + strict)  # the score sample reads is the one classify wrote
    assert strict and all(s >= 0.5 for _x, s in strict)
    spam_share = {
        name: sum(x in set(spam) for x, _ in rows) / len(rows)
        for name, rows in (("loose", loose), ("strict", strict))
    }
    assert spam_share["loose"] > 0.3 and spam_share["strict"] < 0.1, spam_share  # the floor keeps spam out


def test_score_rule_in_clean_with_a_threshold_per_domain(cli, tmp_path, fasttext_quality, fasttext_domain):
    kinds = mixed_corpus(tmp_path / "in", per_kind=20)
    assert (
        cli(
            "data",
            "classify",
            "--input",
            tmp_path / "in",
            "--classifier",
            fasttext_quality,
            "--classifier",
            fasttext_domain,
            "--output",
            tmp_path / "scored",
        )[0]
        == 0
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - score: {key: quality_score, min: 0.5, min_by_domain: {code: 0.0}}\n")
    code, out, err = cli(
        "data",
        "clean",
        "--input",
        tmp_path / "scored",
        "--output",
        tmp_path / "clean",
        "--rules",
        rules,
        "--pii",
        "keep",
    )
    assert code == 0, err
    assert "dropped by score" in out
    scored = [r for f in sorted((tmp_path / "scored").glob("*.jsonl")) for r in read_jsonl(f)]
    kept = [r for f in sorted((tmp_path / "clean").glob("part-*.jsonl")) for r in read_jsonl(f)]
    expected = [r for r in scored if r["quality_score"] >= 0.5 or r["domain"] == "code"]
    assert sorted(r["text"] for r in kept) == sorted(r["text"] for r in expected)
    code_rows = [r for r in scored if r["domain"] == "code"]
    assert any(r["quality_score"] < 0.5 for r in code_rows)  # the per-domain floor is what keeps these
    assert sum(kinds[r["text"]] == "spam" for r in kept) <= 2
    write_jsonl(tmp_path / "raw" / "a.jsonl", [{"text": "no scores here"}])
    code, _out, err = cli(
        "data", "clean", "--input", tmp_path / "raw", "--output", tmp_path / "c2", "--rules", rules
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{tmp_path / 'raw' / 'a.jsonl'}: row 0: no score column 'quality_score'" in err


def test_a_file_without_the_text_column_fails_before_anything_is_written(cli, tmp_path, fasttext_quality):
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": "fine"}])
    write_jsonl(tmp_path / "in" / "b.jsonl", [{"body": "no text column"}])
    code, _out, err = cli("data", "classify", "--input", tmp_path / "in", "--classifier", fasttext_quality,
                          "--output", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{tmp_path / 'in' / 'b.jsonl'}: no 'text' or 'content' column (columns: body)" in err
    assert not (tmp_path / "out").exists()
