"""`llmctl data sft` on the executor: any shard count, worker count or executor writes the same bytes, and a
run whose shard was SIGKILLed resumes (skipping finished shards) to the uninterrupted output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_helpers import write_jsonl
from sft_helpers import CONVERSATION, run_sft, tiny_chatml_tokenizer, write_json

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_chatml_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _rows(n: int, tag: str) -> list[dict]:
    return [{"instruction": f"{CONVERSATION[i % 6]['content']} {tag}{i}", "output": "Blue. " * (1 + i % 7)}
            for i in range(n)]


def _corpus(root: Path) -> Path:
    write_jsonl(root / "a.jsonl", _rows(40, "a"))
    write_json(root / "b.json", _rows(30, "b"))
    return root


def _outputs(prefix: Path) -> dict[str, bytes]:
    return {p.name[len(prefix.name):]: p.read_bytes() for p in prefix.parent.glob(f"{prefix.name}_packed_*")}


def _report(prefix: Path) -> dict:
    r = json.loads(Path(f"{prefix}_sft.json").read_text())
    r.pop("output_prefix"), r.pop("files")
    return r


def test_shards_workers_and_ray_write_identical_bytes(tmp_path, tok, ray_executor):
    from llmctl.data.sft.preprocess import preprocess_sft

    inp = _corpus(tmp_path / "in")
    opts = dict(handler_name="AlpacaStyleInstructionHandler", prompt_type="chatml", seq_length=48, neat_pack=True)
    res = run_sft(inp, tok, tmp_path / "one", "--prompt-type", "chatml", "--seq-length", "48", "--neat-pack")
    assert res.exit_code == 0, res.output
    res = run_sft(inp, tok, tmp_path / "three", "--prompt-type", "chatml", "--seq-length", "48", "--neat-pack",
                  "--num-shards", "3")  # fewer files than shards: documents dealt round-robin
    assert res.exit_code == 0, res.output
    report = preprocess_sft([inp], str(tok), str(tmp_path / "ray"), num_shards=2, executor=ray_executor, **opts)
    assert report["run"]["executor"] == "ray" and report["packed_sequences"] > 0
    base = _outputs(tmp_path / "one")
    assert len(base) == 6 and base == _outputs(tmp_path / "three") == _outputs(tmp_path / "ray")
    assert _report(tmp_path / "one") == _report(tmp_path / "three") == _report(tmp_path / "ray")
    assert not list(tmp_path.glob("_*.sft_work")), "a finished run removes its work dir"


def _llmctl(*args, kill: str | None = None):
    pre = [str(HERE / "kill_shard.py"), kill, "2", "--"] if kill else ["-m", "llmctl.cli"]
    env = {**os.environ, "LLMCTL_PROGRESS": "0"}
    return subprocess.run([sys.executable, *pre, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_sft_killed_midway_resumes_to_the_uninterrupted_output(tmp_path, tok):
    inp = _corpus(tmp_path / "in")
    base = ["data", "sft", "--input", inp, "--tokenizer", tok, "--prompt-type", "chatml", "--num-shards", "4"]
    assert run_sft(inp, tok, tmp_path / "whole" / "s", *base[6:]).exit_code == 0
    killed = _llmctl(*base, "--output-prefix", tmp_path / "r" / "s", kill="llmctl.data.sft.preprocess:SFTStage")
    assert killed.returncode == -9 and not _outputs(tmp_path / "r" / "s")
    again = _llmctl(*base, "--output-prefix", tmp_path / "r" / "s")
    assert again.returncode == 0, again.stderr
    assert "resumed: skipped completed shards (sft 2/4)" in again.stderr
    assert _outputs(tmp_path / "r" / "s") == _outputs(tmp_path / "whole" / "s")
    assert _report(tmp_path / "r" / "s") == _report(tmp_path / "whole" / "s")
