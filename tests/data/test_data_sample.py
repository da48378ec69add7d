"""`llmctl data sample`: byte ratios, score floors, shard sizes, determinism, and bad input."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from data_helpers import run_cli

ZH = "".join(chr(0x4E00 + i) for i in range(3000))


def make_corpus(root, files_per_lang=3, rows=2500, seed=0, text_col="content"):
    """Ultra-FineWeb-like: ROOT/zh/*.parquet and ROOT/en/*.parquet with a text and a score column."""
    r = random.Random(seed)
    for lang in ("zh", "en"):
        (root / lang).mkdir(parents=True, exist_ok=True)
        for f in range(files_per_lang):
            if lang == "zh":
                texts = ["".join(r.choices(ZH, k=r.randint(20, 200))) for _ in range(rows)]
            else:
                words = ["".join(r.choices("etaoinshr", k=r.randint(2, 8))) for _ in range(2000)]
                texts = [" ".join(r.choices(words, k=r.randint(10, 200))) for _ in range(rows)]
            pq.write_table(
                pa.table({text_col: texts, "score": [r.random() for _ in texts], "source": ["web"] * rows}),
                root / lang / f"part-{f}.parquet",
            )
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("ufw") / "Ultra-FineWeb")


def _sample(corpus, out, seed=42, size_mb=1.5, zh=0.3, extra=()):
    args = [
        "data",
        "sample",
        "--input-root",
        corpus,
        "--out-dir",
        out,
        "--train-size-gb",
        str(size_mb / 1024),
        "--zh-ratio",
        str(zh),
        "--en-ratio",
        str(round(1 - zh, 6)),
        "--min-score-zh",
        "0.3",
        "--min-score-en",
        "0.6",
        "--target-shard-mb",
        "0.25",
        "--seed",
        str(seed),
        *extra,
    ]
    return run_cli(args)


def test_ratios_scores_shards_and_manifest(corpus, tmp_path):
    res = _sample(corpus, tmp_path / "out")
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    table = pq.read_table([f["path"] for f in manifest["files"]])
    sizes = pc.binary_length(table["text"]).to_numpy()
    langs = table["lang"].to_numpy(zero_copy_only=False)
    total = sizes.sum()
    zh_share = sizes[langs == "zh"].sum() / total
    assert abs(zh_share - 0.3) < 0.02
    assert abs(total - 1.5 * 2**20) / (1.5 * 2**20) < 0.02  # the byte budget itself
    score = table["score"].to_numpy()
    assert score[langs == "zh"].min() >= 0.3 and score[langs == "en"].min() >= 0.6
    # every shard but the last is within 20% of --target-shard-mb on disk
    files = manifest["files"]
    assert len(files) >= 3
    for f in files[:-1]:
        assert abs(f["bytes"] - 0.25 * 2**20) / (0.25 * 2**20) < 0.2, f
    for f in files:  # and each shard carries the mix, not one language after the other
        t = pq.read_table(f["path"])
        s = pc.binary_length(t["text"]).to_numpy()
        zh = s[t["lang"].to_numpy(zero_copy_only=False) == "zh"].sum() / s.sum()
        assert 0.2 < zh < 0.4, (f, zh)
    assert manifest["rows"] == table.num_rows and manifest["bytes"] == total
    assert abs(manifest["by_lang"]["zh"]["share"] - zh_share) < 1e-9
    assert len(manifest["sources"]) == 6
    # rows point back at their source row, whose score passed the floor
    src_file, src_row = table["source"][0].as_py().rsplit(":", 1)
    row = pq.read_table(corpus / src_file).slice(int(src_row), 1)
    assert row["content"][0].as_py() == table["text"][0].as_py()


def test_same_seed_same_sample_other_seed_differs(corpus, tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        assert _sample(corpus, tmp_path / name, seed=seed, size_mb=0.5).exit_code == 0

    def rows(name):
        return pq.read_table(sorted((tmp_path / name).glob("*.parquet"))).to_pylist()

    assert rows("a") == rows("b")
    assert rows("a") != rows("c")


def test_sharded_runs_split_the_budget(corpus, tmp_path):
    res = _sample(corpus, tmp_path / "s", size_mb=1.0, extra=["--num-shards", "3", "--workers", "1"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["num_shards"] == 3 and abs(m["by_lang"]["zh"]["share"] - 0.3) < 0.02
    assert {f["path"].rsplit("/", 1)[1][:10] for f in m["files"]} == {
        "part-00000",
        "part-00001",
        "part-00002",
    }
    one = _sample(corpus, tmp_path / "one", size_mb=1.0, extra=["--shard-index", "1", "--num-shards", "3"])
    assert one.exit_code == 0, one.output
    assert (tmp_path / "one" / "_manifest-00001-of-00003.json").is_file()


def test_ratios_must_sum_to_one(corpus, tmp_path):
    res = run_cli(
        [
            "data",
            "sample",
            "--input-root",
            corpus,
            "--out-dir",
            tmp_path / "o",
            "--train-size-gb",
            "0.001",
            "--zh-ratio",
            "0.5",
            "--en-ratio",
            "0.4",
        ]
    )
    assert res.exit_code == 2
    assert "--zh-ratio + --en-ratio must be 1" in res.output and len(res.output.strip().splitlines()) == 1


def test_corrupt_parquet_and_missing_columns_name_the_file(tmp_path):
    root = make_corpus(tmp_path / "c", files_per_lang=1, rows=50)
    bad = root / "en" / "part-9.parquet"
    bad.write_bytes(b"PAR1 this is not really parquet PAR1")
    args = ["data", "sample", "--input-root", root, "--out-dir", tmp_path / "o", "--train-size-gb", "0.0001"]
    args += ["--zh-ratio", "0.5", "--en-ratio", "0.5"]
    res = run_cli(args)
    assert res.exit_code == 2 and str(bad) in res.output and "parquet" in res.output
    bad.unlink()
    res = run_cli(args + ["--text-key", "body"])
    assert res.exit_code == 2 and "no column 'body'" in res.output and "part-0.parquet" in res.output
    assert not list((tmp_path / "o").glob("*.parquet")) if (tmp_path / "o").exists() else True


def test_slurm_array_union_selects_what_one_shard_selects(corpus, tmp_path):
    """--shard-index i --num-shards 4 for every i (one output dir, as on a shared file system) selects exactly
    the rows of a --num-shards 1 run: the cuts come from the global count pre-pass, not from shard i's."""
    assert _sample(corpus, tmp_path / "one", size_mb=1.0, extra=["--num-shards", "1"]).exit_code == 0
    for i in range(4):
        res = _sample(corpus, tmp_path / "arr", size_mb=1.0, extra=["--shard-index", str(i), "--num-shards", "4"])
        assert res.exit_code == 0, res.output

    def sources(d):
        return sorted(pq.read_table(sorted(d.glob("part-*.parquet")))["source"].to_pylist())

    assert sources(tmp_path / "arr") == sources(tmp_path / "one") and len(sources(tmp_path / "one")) > 100
    cut = json.loads((tmp_path / "one" / "manifest.json").read_text())["cut"]
    assert all(json.loads((tmp_path / "arr" / f"_manifest-0000{i}-of-00004.json").read_text())["cut"] == cut
               for i in range(4))
