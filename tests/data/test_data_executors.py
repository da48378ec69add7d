"""One executor for every data stage: local processes and Ray give the same bytes, shards resume after SIGKILL.

Ray runs as one local Ray (`ray.init(num_cpus=2)`, conftest's `ray_executor`) shared by the whole session. Fault injection is a wrapper
script (`kill_shard.py`) that kills a shard from outside the production code.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from llmctl.core.errors import UserError

HERE = Path(__file__).resolve().parent
WORDS = [f"w{i}" for i in range(400)]


def _local(workers: int = 2):
    from llmctl.data.executors.local import LocalExecutor

    return LocalExecutor(workers)


def _doc(r: random.Random, n: int = 80) -> str:
    return " ".join(r.choice(WORDS) for _ in range(n))


def make_jsonl_corpus(root: Path, files: int = 4, docs: int = 40, seed: int = 0, words: int = 200) -> dict[str, str]:
    """`files` jsonl files; file 3 holds near copies (one word changed) of five documents of file 0, so with
    4 shards the duplicates sit in another shard than their originals. Returns {copy id: original id}."""
    r = random.Random(seed)
    rows = [[{"id": f"f{f}-{i}", "text": _doc(r, words)} for i in range(docs)] for f in range(files)]
    planted = {}
    for k in range(5):
        words = rows[0][k]["text"].split()
        words[10] = "changed"
        rows[files - 1][k] = {"id": f"copy-{k}", "text": " ".join(words)}
        planted[f"copy-{k}"] = rows[0][k]["id"]
    root.mkdir(parents=True, exist_ok=True)
    for f, rs in enumerate(rows):
        with open(root / f"part-{f}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(x) + "\n" for x in rs)
    return planted


def make_parquet_corpus(root: Path, rows: int = 600) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    r = random.Random(1)
    for lang in ("zh", "en"):
        (root / lang).mkdir(parents=True, exist_ok=True)
        for f in range(3):
            if lang == "zh":
                texts = ["".join(chr(0x4E00 + r.randrange(3000)) for _ in range(r.randint(20, 120))) for _ in range(rows)]
            else:
                texts = [_doc(r, r.randint(10, 80)) for _ in range(rows)]
            pq.write_table(pa.table({"text": texts, "score": [r.random() for _ in texts]}), root / lang / f"{f}.parquet")
    return root


RUN_REPORTS = ("_report.json", "manifest.json", "c_tokenize.json")  # hold timings: compared by same_report


def outputs(root: Path) -> dict[str, bytes]:
    """Every output file's bytes by relative path, the output directory's own name replaced by OUT (per-shard
    reports and _pairs.jsonl name files); markers, histograms and the run reports left out."""
    return {
        str(p.relative_to(root)): p.read_bytes().replace(str(root).encode(), b"OUT")
        for p in sorted(root.rglob("*"))
        if p.is_file() and "_done" not in p.parts and p.name not in RUN_REPORTS and p.suffix != ".npy"
    }


def same_report(a: dict, b: dict, root_a: Path, root_b: Path) -> bool:
    """Reports equal except the run block (executor, timings) and the output directory's name."""

    def norm(r, root):
        r = {k: v for k, v in r.items() if k not in ("run", "runs")}
        return json.dumps(r, sort_keys=True).replace(str(root), "OUT")

    return norm(a, root_a) == norm(b, root_b)


def _kept_ids(out: Path) -> set[str]:
    return {json.loads(line)["id"] for f in out.glob("part-*.jsonl") for line in f.read_text().splitlines()}


def test_executors_are_registered_on_the_plugin_bus():
    from llmctl.core.plugins import get_bus

    reg = get_bus().registry("executors")
    assert {"local", "ray"} <= set(reg) and reg["local"].plugin == reg["ray"].plugin == "data"


def test_clean_and_dedup_local_and_ray_are_byte_identical(tmp_path, ray_executor):
    from llmctl.data.clean import run_clean
    from llmctl.data.dedup import DedupParams, run_dedup

    planted = make_jsonl_corpus(tmp_path / "in")
    params = DedupParams(exact=False, minhash=True)
    reports = {}
    for name, ex in (("local", _local()), ("ray", ray_executor)):
        out = tmp_path / name
        c = run_clean([tmp_path / "in"], out / "clean", rules="none", num_shards=4, executor=ex)
        d = run_dedup([out / "clean"], out / "dedup", params, num_shards=4, executor=ex)
        reports[name] = (c, d)
        assert c["run"]["executor"] == name and [r["executor"] for r in d["runs"]] == [name] * 3
        kept = _kept_ids(out / "dedup")
        assert not set(planted) & kept and set(planted.values()) <= kept  # cross-shard near dups removed
    assert outputs(tmp_path / "local") == outputs(tmp_path / "ray")
    for (a, b) in zip(reports["local"], reports["ray"]):
        assert same_report(a, b, tmp_path / "local", tmp_path / "ray")


def test_tokenize_local_ray_and_any_shard_count_are_byte_identical(tmp_path, ray_executor, bytelevel_tok):
    from llmctl.data.tokens import tokenize_corpus

    make_jsonl_corpus(tmp_path / "in", files=3)
    runs = {
        "one": dict(num_shards=1, executor=_local(1)),
        "local": dict(num_shards=4, executor=_local(2)),  # 3 files < 4 shards: documents dealt round-robin
        "ray": dict(num_shards=4, executor=ray_executor),
        "two": dict(num_shards=2, executor=_local(2)),  # files split between shards
    }
    got = {}
    for name, kw in runs.items():
        r = tokenize_corpus([tmp_path / "in"], bytelevel_tok, str(tmp_path / name / "c"), val_ratio=0.2, **kw)
        got[name] = r.report
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == [
            "c_tokenize.json", "c_train.bin", "c_train.idx", "c_val.bin", "c_val.idx"
        ]
    for name in ("local", "ray", "two"):
        assert outputs(tmp_path / name) == outputs(tmp_path / "one"), name
        assert same_report(got[name], got["one"], tmp_path / name, tmp_path / "one")


def test_sample_local_ray_and_shard_counts_select_the_same_rows(tmp_path, ray_executor):
    import pyarrow.parquet as pq

    from llmctl.data.sample import run_sample

    corpus = make_parquet_corpus(tmp_path / "ufw")
    kw = dict(input_root=str(corpus), train_size_gb=0.1 / 1024, zh_ratio=0.3, en_ratio=0.7, min_score_zh=0.2,
              min_score_en=0.4, target_shard_mb=0.05, seed=3)
    rows, manifests = {}, {}
    for name, n, ex in (("one", 1, _local(1)), ("four", 4, _local(2)), ("ray", 4, ray_executor)):
        m = run_sample(num_shards=n, executor=ex, out_dir=str(tmp_path / name), **kw)
        manifests[name] = m
        rows[name] = sorted(pq.read_table([f["path"] for f in m["files"]])["source"].to_pylist())
    assert rows["one"] == rows["four"] == rows["ray"] and len(rows["one"]) > 100
    assert abs(manifests["one"]["by_lang"]["zh"]["share"] - 0.3) < 0.02
    assert outputs(tmp_path / "four") == outputs(tmp_path / "ray")
    assert same_report(manifests["four"], manifests["ray"], tmp_path / "four", tmp_path / "ray")


def test_dedup_join_in_small_partitions_matches_one_partition(tmp_path):
    from llmctl.data.dedup import DedupParams, run_dedup

    make_jsonl_corpus(tmp_path / "in")
    params = DedupParams()
    a = run_dedup([tmp_path / "in"], tmp_path / "a", params, num_shards=2, executor=_local(1))
    b = run_dedup([tmp_path / "in"], tmp_path / "b", params, num_shards=2, executor=_local(1), join_memory_bytes=2000)
    assert a["join"]["removed"] == b["join"]["removed"] == 5
    assert _kept_ids(tmp_path / "a") == _kept_ids(tmp_path / "b")


def _llmctl(*args, kill: str | None = None, shard: int = 2, env_extra=None):
    """`llmctl ARGS` in a subprocess; with `kill`, through kill_shard.py (shard `shard` of that stage dies)."""
    pre = [str(HERE / "kill_shard.py"), kill, str(shard), "--"] if kill else ["-m", "llmctl.cli"]
    env = {**os.environ, "LLMCTL_PROGRESS": "0", **(env_extra or {})}
    return subprocess.run([sys.executable, *pre, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_tokenize_killed_midway_resumes_to_the_uninterrupted_output(tmp_path, bytelevel_tok):
    make_jsonl_corpus(tmp_path / "in", files=4, docs=1500, words=15)  # a shard = one file of 2 chunks: killed mid-file
    base = ["data", "tokenize", "--input", tmp_path / "in", "--tokenizer", bytelevel_tok, "--num-shards", "4",
            "--val-ratio", "0.1"]
    whole = _llmctl(*base, "--output-prefix", tmp_path / "whole" / "c")
    assert whole.returncode == 0, whole.stderr
    killed = _llmctl(*base, "--output-prefix", tmp_path / "r" / "c", kill="llmctl.data.tokens:TokenizeStage")
    assert killed.returncode == -9
    assert not (tmp_path / "r" / "c_train.bin").exists()
    done = sorted(p.name for p in (tmp_path / "r" / "_c.tokenize_work" / "_done").iterdir())
    assert done == ["tokenize-00000-of-00004.json", "tokenize-00001-of-00004.json"]
    again = _llmctl(*base, "--output-prefix", tmp_path / "r" / "c")
    assert again.returncode == 0, again.stderr
    assert "resumed: skipped completed shards (tokenize 2/4)" in again.stderr
    report = json.loads((tmp_path / "r" / "c_tokenize.json").read_text())
    assert outputs(tmp_path / "r") == outputs(tmp_path / "whole")
    assert same_report(report, json.loads((tmp_path / "whole" / "c_tokenize.json").read_text()),
                       tmp_path / "r", tmp_path / "whole")


def test_dedup_killed_midway_resumes_to_the_uninterrupted_output(tmp_path):
    make_jsonl_corpus(tmp_path / "in")
    base = ["data", "dedup", "--input", tmp_path / "in", "--num-shards", "4", "--minhash"]
    assert _llmctl(*base, "--output", tmp_path / "whole").returncode == 0
    killed = _llmctl(*base, "--output", tmp_path / "r", kill="llmctl.data.dedup:SignatureStage")
    assert killed.returncode == -9  # shard 2's signatures: killed after reading three documents
    again = _llmctl(*base, "--output", tmp_path / "r")
    assert again.returncode == 0, again.stderr
    assert "resumed: skipped completed shards (dedup-signatures 2/4)" in again.stderr
    report = json.loads((tmp_path / "r" / "_report.json").read_text())
    assert report["runs"][0]["shards_skipped"] == [0, 1] and report["runs"][0]["shards_run"] == [2, 3]
    assert _llmctl(*base, "--output", tmp_path / "r").stderr.strip().endswith(
        "(dedup-signatures 4/4, dedup-join 1/1, dedup 4/4)"
    )  # a finished run reruns nothing
    assert outputs(tmp_path / "r") == outputs(tmp_path / "whole")
    whole = json.loads((tmp_path / "whole" / "_report.json").read_text())
    assert same_report(report, whole, tmp_path / "r", tmp_path / "whole")


def test_corrupt_shard_input_fails_naming_it_and_leaves_no_marker(tmp_path):
    from llmctl.data.clean import run_clean

    make_jsonl_corpus(tmp_path / "in")
    bad = tmp_path / "in" / "part-2.jsonl"
    with open(bad, "a") as f:
        f.write('{"text": "cut off\n')
    with pytest.raises(UserError, match=f"{bad}:41: invalid JSON"):
        run_clean([tmp_path / "in"], tmp_path / "out", rules="none", num_shards=4, executor=_local(1))
    markers = sorted(p.name for p in (tmp_path / "out" / "_done").iterdir())
    assert markers == ["clean-00000-of-00004.json", "clean-00001-of-00004.json"]


def test_ray_missing_or_unreachable_is_a_one_line_error(tmp_path):
    make_jsonl_corpus(tmp_path / "in", files=1, docs=5)
    base = ["data", "clean", "--input", tmp_path / "in", "--output", tmp_path / "out", "--executor", "ray"]
    hide_ray = tmp_path / "hide"
    (hide_ray / "ray").mkdir(parents=True)
    (hide_ray / "ray" / "__init__.py").write_text("raise ImportError('ray is hidden for this test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(hide_ray), os.environ.get("PYTHONPATH", "")])}
    for res, needle in (
        (_llmctl(*base, env_extra=env), "pip install 'llmctl-data[ray]'"),
        (_llmctl(*base, "--ray-address", "127.0.0.1:1"), "--ray-address 127.0.0.1:1: cannot reach"),
    ):
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], res.stderr


class _FakeRay:
    """Just enough of the `ray` module to see which options a task was submitted with (runs it inline)."""

    def __init__(self):
        self.options = []
        self.exceptions = type("E", (), {"RayTaskError": RuntimeError})

    def remote(self, fn):
        fake = self

        class Remote:
            def options(self, **opts):
                fake.options.append(opts)
                return self

            def remote(self, *args):
                return fn(*args)

        return Remote()

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, refs):
        return refs


def test_ray_resources_per_task_reach_the_task_options(tmp_path, monkeypatch):
    from data_helpers import run_cli

    import llmctl.data.executors.ray as ray_executor_module

    fake = _FakeRay()
    monkeypatch.setattr(ray_executor_module, "connect", lambda *a, **k: fake)
    make_jsonl_corpus(tmp_path / "in", files=2, docs=5)
    res = run_cli(["data", "clean", "--input", tmp_path / "in", "--output", tmp_path / "out", "--executor", "ray",
                   "--num-shards", "2", "--ray-cpus-per-task", "2", "--ray-memory-per-task", "1.5GB"])
    assert res.exit_code == 0, res.output
    assert fake.options == [{"max_retries": 0, "num_cpus": 2.0, "memory": 3 << 29}]
    res = run_cli(["data", "clean", "--input", tmp_path / "in", "--output", tmp_path / "o2",
                   "--ray-cpus-per-task", "2"])
    assert res.exit_code == 2 and "need --executor ray" in res.output
