"""`llmctl data synth --layout ultrafineweb`: the parquet tree lab 1 samples from (language folders, a content
and a score column), read back with pyarrow and sampled by `llmctl data sample` with the lab's score floors."""

from __future__ import annotations

import json

import pyarrow.parquet as pq


def test_ultrafineweb_tree_is_what_sample_reads(tmp_path, cli):
    code, out, err = cli("data", "synth", "--out-dir", tmp_path / "raw", "--layout", "ultrafineweb", "--docs", "400")
    assert code == 0, err
    root = tmp_path / "raw" / "ultrafineweb"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    assert files == ["en/part-00000.parquet", "en/part-00001.parquet", "zh/part-00000.parquet",
                     "zh/part-00001.parquet"]
    rows = {lang: pq.read_table(sorted((root / lang).glob("*.parquet"))).to_pylist() for lang in ("zh", "en")}
    assert set(rows["zh"][0]) == {"content", "score"}
    assert all(0.0 <= r["score"] <= 1.0 for lang in rows for r in rows[lang])
    assert any("的首都是" in r["content"] for r in rows["zh"]) and any("capital" in r["content"] for r in rows["en"])
    dirty = [r for r in rows["en"] if "spam.example.com" in r["content"]]
    assert dirty and all(r["score"] < 0.2 for r in dirty)
    assert not (tmp_path / "raw" / "corpus.jsonl").exists()

    code, out, err = cli("data", "sample", "--input-root", root, "--out-dir", tmp_path / "sample",
                         "--train-size-gb", "0.00002", "--zh-ratio", "0.2", "--en-ratio", "0.8",
                         "--min-score-zh", "0.5", "--min-score-en", "0.5", "--target-shard-mb", "0.01")
    assert code == 0, err
    sampled = pq.read_table(sorted((tmp_path / "sample").glob("*.parquet"))).to_pylist()
    assert sampled and all(r["score"] >= 0.5 for r in sampled)
    assert not any("spam.example.com" in r["text"] for r in sampled)  # sample writes the text as `text`
    manifest = json.loads((tmp_path / "sample" / "manifest.json").read_text())
    assert set(manifest["by_lang"]) == {"zh", "en"}
    assert abs(manifest["by_lang"]["zh"]["share"] - 0.2) < 0.05
