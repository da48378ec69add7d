"""The tutorial's litgpt YAML keys mapped: `llmctl convert litgpt-config` turns a litgpt pretrain config with
the MiniLM tutorial's keys and values into an llmctl config that `llmctl pretrain` loads, describing the
model the `minilm-0.1b` preset (checked against transformers' parameter count) describes and the
tutorial's training run (640 x 512 tokens a step, 45e9 tokens, lr 1e-3 -> 1e-5 after 2000 warmup steps,
wandb). Unknown keys and values llmctl does not implement are one line, exit 2, nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from llmctl.core.config import to_dict
from llmctl.core.litgpt_config import COMPUTED, DROPPED, MAPPING, REQUIRED, convert
from llmctl.core.model_config import VOCAB_LAYOUT_FIELDS
from llmctl.core.train.config import load_train_config

TUTORIAL = Path(__file__).parent / "data" / "litgpt_minilm_pretrain.yaml"
DOC = Path(__file__).resolve().parents[2] / "docs" / "labs" / "single-gpu-minilm.md"


def test_tutorial_yaml_becomes_the_minilm_run(tmp_path, cli):
    out = tmp_path / "minilm.yaml"
    code, stdout, err = cli("convert", "litgpt-config", TUTORIAL, "--out", out, "--data-path", "data/minilm")
    assert code == 0, err
    assert "eval.max_iters 100 micro-batches -> eval.iters 13 global batches" in stdout
    assert "data: dropped; litdata's optimized dataset" in stdout and "devices: dropped" in stdout
    cfg = load_train_config(out, resolve_vocab=False)
    preset = load_train_config("minilm-0.1b", resolve_vocab=False)
    model, want = to_dict(cfg.model), to_dict(preset.model)
    for key in VOCAB_LAYOUT_FIELDS:
        model.pop(key), want.pop(key)
    assert model == want  # the litgpt model_config is the preset's model, field for field
    assert cfg.model.num_params() == 108_749_568
    assert (cfg.global_batch_size, cfg.train.micro_batch_size, cfg.data.seq_length) == (640, 80, 512)
    assert cfg.tokens_per_step == 327_680 and cfg.train.train_tokens == 45_000_000_000
    assert cfg.train_iters == preset.train_iters == 137_330
    assert (cfg.train.lr, cfg.train.min_lr, cfg.warmup_iters, cfg.train.schedule) == (1e-3, 1e-5, 2000, "cosine")
    assert (cfg.train.weight_decay, cfg.train.betas, cfg.train.clip_grad, cfg.train.dtype) == \
        (0.1, [0.9, 0.95], 1.0, "bf16")
    assert cfg.logging.sinks == ["jsonl", "wandb"] and cfg.data.tokenizer == "minimind_tokenizer"
    assert cfg.data.path == "data/minilm" and cfg.train.seed == 42 and cfg.checkpoint.interval == 1000
    assert cfg.checkpoint.dir == "out/pretrain/minilm/108m" and cfg.logging.interval == 1
    assert out.read_text().startswith("# llmctl pretraining config converted from the litgpt config")


def test_defaults_are_litgpts_for_keys_left_out():
    cfg, _ = convert({"model_config": {"n_layer": 2, "n_embd": 64, "n_head": 4, "intermediate_size": 128,
                                       "block_size": 64, "vocab_size": 300}})
    t = cfg["train"]
    assert (t["global_batch_size"], t["micro_batch_size"], t["warmup_iters"], t["train_tokens"]) == \
        (512, 4, 2000, 3_000_000_000_000)
    assert (t["lr"], t["weight_decay"], t["betas"], t["min_lr"]) == (1e-3, 0.01, [0.9, 0.999], 4e-5)
    assert cfg["logging"]["sinks"] == ["jsonl", "tensorboard"] and cfg["data"]["seq_length"] == 64
    assert cfg["eval"]["iters"] == 1  # 100 micro-batches of 4 = 400 samples <= one global batch of 512
    assert "num_kv_heads" not in cfg["model"]  # litgpt: n_query_groups defaults to n_head (MHA)
    steps, _ = convert({"model_config": {"n_layer": 2, "n_embd": 64, "n_head": 4, "intermediate_size": 128,
                                         "block_size": 64, "vocab_size": 300}, "train": {"max_steps": 50}})
    assert steps["train"]["train_iters"] == 50 and "train_tokens" not in steps["train"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["train"].update(max_norn=1.0), "unknown litgpt key 'train.max_norn' (did you mean 'train.max_norm'?)"),
    (lambda d: d["model_config"].update(norm_class_name="LayerNorm"), "model_config.norm_class_name: 'LayerNorm' is not supported"),
    (lambda d: d["model_config"].update(parallel_residual=True), "model_config.parallel_residual: True is not supported"),
    (lambda d: d["model_config"].update(head_size=64), "head_size 64 x n_head 16 != n_embd 768"),
    (lambda d: d.update(optimizer="SGD"), "optimizer 'SGD' is not supported"),
    (lambda d: d.update(precision="fp8"), "precision: 'fp8' is not a value llmctl can map"),
    (lambda d: d["train"].update(max_steps=10), "set one of train.max_tokens and train.max_steps"),
    (lambda d: d["model_config"].pop("n_layer"), "model_config needs n_layer"),
])
def test_bad_litgpt_configs_are_one_line(tmp_path, cli, edit, message):
    doc = yaml.safe_load(TUTORIAL.read_text())
    edit(doc)
    src = tmp_path / "bad.yaml"
    src.write_text(yaml.safe_dump(doc))
    code, _, err = cli("convert", "litgpt-config", src, "--out", tmp_path / "out.yaml")
    assert code == 2 and err.startswith(f"error: {src}: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.yaml").exists()


def test_the_docs_mapping_table_is_the_code_table():
    """single-gpu-minilm.md prints the mapping; every litgpt key the code knows is in its table, and each
    one-to-one row names the llmctl key the code maps it to."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `([\w.]+)` \| (.*?) \|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    assert set(MAPPING) | set(COMPUTED) | set(REQUIRED) | set(DROPPED) <= set(rows), \
        sorted((set(MAPPING) | set(COMPUTED) | set(REQUIRED) | set(DROPPED)) - set(rows))
    for key, (target, _) in MAPPING.items():
        assert f"`{target}`" in rows[key], (key, rows[key])
