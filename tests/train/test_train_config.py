"""Config loading and the one-line, exit-2 errors a user gets for a bad config (through the real CLI)."""

from __future__ import annotations

import pytest
import yaml

from llmctl.core.model_config import get_preset
from llmctl.core.train import load_train_config, preset_names


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Presets log to ./logs: run where a failing config cannot leave files in the repository."""
    monkeypatch.chdir(tmp_path)


def _err(code, out, err):
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_unknown_key_did_you_mean(cli, pattern_data):
    line = _err(*cli("pretrain", "-c", "tiny", "--set", f"data.path={pattern_data}", "--set", "train.lerning_rate=1"))
    assert "train.lerning_rate" in line
    line = _err(*cli("pretrain", "-c", "tiny", "--set", "trian.lr=1"))
    assert "'trian'" in line and "did you mean 'train'" in line
    line = _err(*cli("pretrain", "-c", "tiny", "--set", "train.micro_bach_size=2"))
    assert "did you mean 'micro_batch_size'" in line
    line = _err(*cli("pretrain", "-c", "tiny", "--set", "model.hiden_size=32"))
    assert "model.hiden_size" in line and "did you mean 'hidden_size'" in line
    line = _err(*cli("pretrain", "-c", "tiny", "--set", "train.schedule=cosin"))
    assert "did you mean 'cosine'" in line


def test_indivisible_batch_sizes(cli, pattern_data, tmp_path):
    line = _err(*cli("pretrain", "-c", "tiny", "--set", f"data.path={pattern_data}", "--set", "data.dataset=pattern",
                     "--set", "train.global_batch_size=10", "--set", "train.micro_batch_size=4",
                     "--set", f"logging.dir={tmp_path}"))
    assert "global batch size 10 is not divisible by train.micro_batch_size 4" in line
    line = _err(*cli("pretrain", "-c", "tiny", "--set", f"data.path={pattern_data}", "--set", "data.seq_length=64",
                     "--set", "train.global_batch_size=null", "--set", "train.tokens_per_step=1000"))
    assert "tokens_per_step 1000 is not divisible by data.seq_length 64" in line


def test_missing_data_prefix(cli, tmp_path):
    line = _err(*cli("pretrain", "-c", "tiny"))
    assert "data.path" in line and "required" in line
    missing = tmp_path / "nope" / "corpus"
    line = _err(*cli("pretrain", "-c", "tiny", "--set", f"data.path={missing}"))
    assert str(missing) in line  # llmctl-data's "gpt" dataset names the prefix it could not find
    line = _err(*cli("pretrain", "-c", "no-such-preset.yaml"))
    assert "config file not found" in line and "tiny" in line


def test_other_bad_values(cli, pattern_data):
    line = _err(*cli("pretrain", "-c", "tiny", "--set", "train.train_tokens=1000"))
    assert "exactly one of 'train.train_iters' and 'train.train_tokens'" in line
    line = _err(*cli("pretrain", "-c", "tiny", "--set", "train.dtype=fp8"))
    assert "train.dtype" in line
    line = _err(*cli("pretrain", "-c", "tiny", "--set", f"data.path={pattern_data}", "--set", "data.dataset=pattern",
                     "--set", "data.seq_length=512"))
    assert "exceeds model.max_seq_len 256" in line
    line = _err(*cli("pretrain", "-c", "tiny", "--set", f"data.path={pattern_data}", "--set", "data.dataset=pattern",
                     "--set", "logging.sinks=[jsonl, wandbx]"))
    assert "unknown logger 'wandbx'" in line


def test_presets_and_print_config(cli):
    assert {"tiny", "zen-500m"} <= set(preset_names())
    code, out, _ = cli("pretrain", "-c", "zen-500m", "--set", "train.lr=1e-4", "--print-config")
    assert code == 0
    resolved = yaml.safe_load(out)
    # The model section is the complete ModelConfig of the preset: what the checkpoint stores.
    expected = get_preset("zen-500m")
    assert resolved["model"]["hidden_size"] == expected.hidden_size == 896
    assert resolved["model"]["num_layers"] == 24 and "preset" not in resolved["model"]
    assert resolved["train"]["lr"] == 1e-4 and resolved["train"]["tokens_per_step"] == 524288
    cfg = load_train_config("zen-500m")
    assert cfg.global_batch_size == 128 and cfg.grad_accum_steps() == 32 and cfg.warmup_iters == 200


def test_config_file_and_model_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  preset: tiny\n  hidden_size: 128\n  num_heads: 8\n"
                    "train:\n  train_tokens: 1.0e5\n  global_batch_size: 4\ndata:\n  seq_length: 100\n")
    cfg = load_train_config(path, ["train.lr=5e-4"])
    assert cfg.model.hidden_size == 128 and cfg.model.num_layers == get_preset("tiny").num_layers
    assert cfg.train_iters == 250 and cfg.train.lr == 5e-4  # ceil(1e5 / (4 * 100))
