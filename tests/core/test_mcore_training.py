"""The training driver and megatron-core checkpoints: `checkpoint.load` starts pretraining from the weights of
an mcore / llmctl / HF checkpoint (fresh optimizer, schedule and iteration), and `checkpoint.format: mcore`
saves what megatron-core's GPTModel loads while `--resume auto` continues it exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from llmctl.core.errors import UserError
from llmctl.core.nn.loading import load_model

pytest.importorskip("llmctl.data")

TOKENS = torch.randint(3, 1000, (2, 16), generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """PREFIX_train/_val of random documents, as `llmctl data tokenize` writes them."""
    from llmctl.core.mmidx import IndexedDatasetBuilder

    prefix = tmp_path_factory.mktemp("corpus") / "rand"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        with IndexedDatasetBuilder(f"{prefix}_{split}", dtype=np.uint16) as builder:
            for _ in range(48):
                builder.add_document(rng.integers(3, 1000, rng.integers(20, 80)))
    return prefix


def _cfg(corpus: Path, tmp: Path, name: str, iters: int = 4, **checkpoint) -> dict:
    return {"model": {"preset": "tiny", "max_seq_len": 64}, "data": {"path": str(corpus), "seq_length": 32},
            "train": {"train_iters": iters, "global_batch_size": 4, "micro_batch_size": 2, "warmup_iters": 1,
                      "seed": 7},
            "eval": {"iters": 0}, "checkpoint": {"dir": str(tmp / name), **checkpoint},
            "logging": {"dir": str(tmp / "logs"), "name": name, "interval": 1}}


def _losses(tmp: Path, name: str) -> dict[int, float]:
    rows = [json.loads(line) for line in (tmp / "logs" / f"{name}.jsonl").read_text().splitlines() if line]
    return {r["step"]: r["loss"] for r in rows if "lr" in r and "event" not in r}


def _pretrain(cfg: dict, **kw):
    from llmctl.core.train import pretrain

    return pretrain(cfg, **kw)


def test_pretrain_starts_from_mcore_native_or_hf_weights(corpus, tmp_path):
    from llmctl.core.model_config import get_preset
    from llmctl.core.nn.build import build_model
    from llmctl.core.nn.convert import write_hf_dir
    from llmctl.core.nn.mcore_convert import mcore_to_native
    from llmctl.core.nn.mcore_io import save_mcore_checkpoint

    cfg = get_preset("tiny")
    cfg.max_seq_len = 64
    torch.manual_seed(123)
    state = build_model(cfg).state_dict()
    save_mcore_checkpoint(tmp_path / "src_mc", 9, state, cfg, tp=2, pp=2)  # a TP2 x PP2 MindSpeed-style source
    mcore_to_native(tmp_path / "src_mc", tmp_path / "src_native")
    write_hf_dir(cfg, state, tmp_path / "src_hf", None, source="test")

    losses = {}
    for name, src in (("mc", "src_mc"), ("native", "src_native"), ("hf", "src_hf"), ("random", None)):
        ck = {"load": str(tmp_path / src)} if src else {}
        result = _pretrain(_cfg(corpus, tmp_path, name, iters=2, **ck))
        assert result.final_step == 2  # the source's iteration 9 is not continued: weights only
        losses[name] = _losses(tmp_path, name)
    assert losses["mc"] == losses["native"] == losses["hf"]
    assert losses["mc"][1] != losses["random"][1]
    log = (tmp_path / "logs" / "mc.log").read_text()
    assert "initialised from" in log and "megatron-core weights" in log

    bad = _cfg(corpus, tmp_path, "bad", iters=2, load=str(tmp_path / "src_mc"))
    bad["model"]["ffn_hidden_size"] = 256
    with pytest.raises(UserError, match=r"model\.ffn_hidden_size=176 but the config has 256"):
        _pretrain(bad)


def test_mcore_format_resumes_exactly_and_megatron_core_loads_it(corpus, tmp_path):
    _pretrain(_cfg(corpus, tmp_path, "native", interval=2))
    mc = _cfg(corpus, tmp_path, "mc", interval=2, format="mcore")
    first = _pretrain(mc, stop_at_step=2)
    assert first.stopped_early
    it2 = tmp_path / "mc" / "iter_0000002"
    assert sorted(p.name for p in it2.iterdir()) == ["config.yaml", "llmctl_resume", "mp_rank_00"]
    _pretrain(mc, resume="auto")
    assert _losses(tmp_path, "mc") == _losses(tmp_path, "native")  # resumed from the mcore-format checkpoint

    ours, ref = load_model(tmp_path / "mc", device="cpu"), load_model(tmp_path / "native", device="cpu")
    assert ours.source == "mcore" and ref.source == "native"
    want = ref.model.state_dict()
    assert all(torch.equal(want[k], v) for k, v in ours.model.state_dict().items())  # the trained weights

    pytest.importorskip("megatron.core")
    c = ours.config
    job = {"name": "trained", "mode": "load", "tokens": TOKENS.tolist(), "logits": str(tmp_path / "theirs.pt"),
           "file": str(tmp_path / "mc" / "iter_0000004" / "mp_rank_00" / "model_optim_rng.pt"),
           "config": dict(num_layers=c.num_layers, hidden_size=c.hidden_size, num_heads=c.num_heads,
                          num_kv_heads=c.kv_heads, ffn_hidden_size=c.ffn_hidden_size, norm_eps=c.norm_eps,
                          qkv_bias=c.qkv_bias, vocab_size=c.vocab_size, max_seq_len=c.max_seq_len,
                          rope_theta=c.rope_theta, tied=c.tie_embeddings)}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"tmp": str(tmp_path), "out": str(tmp_path / "results.json"), "jobs": [job]}))
    worker = Path(__file__).with_name("mcore_gpt_worker.py")
    proc = subprocess.run([sys.executable, str(worker), str(spec)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (res,) = json.loads((tmp_path / "results.json").read_text())
    assert res["missing"] == [] and res["unexpected"] == []
    with torch.no_grad():
        assert (torch.load(tmp_path / "theirs.pt", weights_only=True) - ours.model(TOKENS)).abs().max() <= 1e-4


def test_mcore_format_refuses_layouts_and_adapter_only_tasks_before_training(corpus, tmp_path):
    cfg = _cfg(corpus, tmp_path, "bad", format="mcore", mcore_tp=4)  # tiny: 2 KV heads
    with pytest.raises(UserError, match="tensor parallel size 4 does not divide the 2 KV heads"):
        _pretrain(cfg)
    assert not (tmp_path / "bad").exists()
