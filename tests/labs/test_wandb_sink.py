"""The wandb sink: a real tiny run with `logging.sinks=[jsonl, wandb]` in wandb's offline mode writes an
offline run whose history, read back by wandb's own reader (`wandb leet inspect --json`, the .wandb
transaction log), equals the JSONL log row for row, and whose config is the run's resolved config."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from labs_helpers import read_jsonl, tiny_run, token_corpus
from llmctl.core.config import to_dict
from llmctl.core.errors import UserError
from llmctl.core.train import load_train_config


def offline_records(log_dir: Path) -> list[dict]:
    runs = sorted((log_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    wandb_cli = shutil.which("wandb") or str(Path(sys.executable).parent / "wandb")
    res = subprocess.run([wandb_cli, "leet", "inspect", "--json", str(runs[0])], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def test_offline_history_equals_the_jsonl_log(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is a test extra (requirements-test.txt)")
    from llmctl.core.train.wandb_sink import numbers

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "llmctl-test")
    data = token_corpus(tmp_path / "data" / "corpus")
    result = tiny_run(tmp_path, "wb", data, "logging.sinks=[jsonl, wandb]", "logging.interval=1")
    jsonl = read_jsonl(result.log_path)
    records = offline_records(result.log_path.parent)

    history = [{k: v for k, v in r["history"]["item"].items() if not k.startswith("_")}
               for r in records if r["type"] == "history"]
    expected = [numbers(r) for r in jsonl if numbers(r)]
    assert len(expected) == 8 + 2  # 8 train records and the validations at steps 4 and 8 (not the run record)
    assert history == expected
    assert [h["step"] for h in history if "loss" in h] == list(range(1, 9))
    assert any("val_loss" in h for h in history)

    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["display_name"] == "wb" and run["project"] == "llmctl-test"
    config = {}
    for r in records:  # the config as wandb holds it: the init record, then every config update
        updates = r["run"]["config"]["update"] if r["type"] == "run" else \
            r["config"]["update"] if r["type"] == "config" else {}
        config.update(updates)
    run_record = next(r["run"] for r in jsonl if "run" in r)
    for section, values in run_record["config"].items():
        assert config[section] == values, section
    assert config["model"]["hidden_size"] == 64 and config["train"]["train_iters"] == 8
    assert config["environment"]["world_size"] == 1 and config["environment"]["device"] == "cpu"
    assert run_record["config"] == to_dict(load_train_config(run_record["config"]))  # complete and loadable


def test_missing_wandb_is_one_line(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *a, **k):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    data = token_corpus(tmp_path / "data" / "corpus", docs=20)
    with pytest.raises(UserError, match=r"needs the wandb package: `pip install 'llmctl-core\[wandb\]'`"):
        tiny_run(tmp_path, "nowb", data, "logging.sinks=[jsonl, wandb]")
