"""Parity with megatron-core itself: its GPTModel loads llmctl-written checkpoints with no missing/unexpected
keys and HF's logits, and llmctl reads a checkpoint whose weights come from GPTModel.state_dict() in MindSpeed's
file layout (mcore-to-hf, generate, eval) with megatron-core's logits — a file shaped like a real training save,
with numpy RNG state and Megatron enums pickled next to the weights. megatron-core runs in a subprocess
(mcore_gpt_worker.py): its parallel state is process-global."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from core_helpers import make_hf_model, pickled_globals
from llmctl.core.nn.loading import load_model

pytest.importorskip("megatron.core")
transformers = pytest.importorskip("transformers")

WORKER = Path(__file__).with_name("mcore_gpt_worker.py")
#: GQA untied llama (plain RoPE: megatron's llama3 scaling hard-codes an 8192 original context) and GQA tied qwen2
#: with qkv biases.
OURS = {"llama-gqa-untied": ("llama-gqa-untied-llama3rope", {"rope_scaling": None}),
        "qwen2-gqa-tied-bias": ("qwen2-gqa-tied-bias", {})}
THEIRS_CONFIG = dict(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, ffn_hidden_size=112, norm_eps=1e-6,
                     qkv_bias=True, vocab_size=320, max_seq_len=256, rope_theta=1e6, tied=False)
TOKENS = torch.randint(3, 200, (2, 16), generator=torch.Generator().manual_seed(3))


def _config_of(hf) -> dict:
    c = hf.config
    return dict(num_layers=c.num_hidden_layers, hidden_size=c.hidden_size, num_heads=c.num_attention_heads,
                num_kv_heads=c.num_key_value_heads, ffn_hidden_size=c.intermediate_size, norm_eps=c.rms_norm_eps,
                qkv_bias=bool(getattr(c, "attention_bias", False) or c.model_type == "qwen2"),
                vocab_size=c.vocab_size, max_seq_len=c.max_position_embeddings,
                rope_theta=float(getattr(c, "rope_theta", None) or c.rope_parameters["rope_theta"]),
                tied=bool(c.tie_word_embeddings))


@pytest.fixture(scope="module")
def megatron_run(tmp_path_factory):
    from llmctl.core.nn.mcore_convert import hf_to_mcore

    tmp = tmp_path_factory.mktemp("megatron")
    jobs, hf_models = [], {}
    for name, (kind, kw) in OURS.items():
        hf = make_hf_model(kind, **kw)
        hf.save_pretrained(tmp / name / "hf")
        it_dir = hf_to_mcore(tmp / name / "hf", tmp / name / "mcore", tp=1, pp=1)
        hf_models[name] = hf
        jobs.append({"name": name, "mode": "load", "config": _config_of(hf), "tokens": TOKENS.tolist(),
                     "file": str(it_dir / "mp_rank_00" / "model_optim_rng.pt"), "logits": str(tmp / f"{name}.pt")})
    jobs.append({"name": "theirs", "mode": "save", "config": THEIRS_CONFIG, "seed": 11, "tokens": TOKENS.tolist(),
                 "dir": str(tmp / "theirs"), "logits": str(tmp / "theirs.pt")})
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"tmp": str(tmp), "out": str(tmp / "results.json"), "jobs": jobs}))
    proc = subprocess.run([sys.executable, str(WORKER), str(spec)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["name"]: r for r in json.loads((tmp / "results.json").read_text())}
    return tmp, hf_models, results


@pytest.mark.parametrize("name", list(OURS))
def test_megatron_core_gptmodel_reads_ours(megatron_run, name):
    tmp, hf_models, results = megatron_run
    assert results[name]["missing"] == [] and results[name]["unexpected"] == []
    theirs = torch.load(tmp / f"{name}.pt", weights_only=True)
    with torch.no_grad():
        ref = hf_models[name](TOKENS).logits
    assert theirs.shape == ref.shape
    assert (theirs - ref).abs().max().item() <= 1e-4


def test_we_read_megatron_cores_checkpoint(megatron_run, tmp_path, cli, tiny_tokenizer_dir):
    tmp, _, _ = megatron_run
    ckpt, want = tmp / "theirs", torch.load(tmp / "theirs.pt", weights_only=True)
    shard = ckpt / "iter_0000007" / "mp_rank_00" / "model_optim_rng.pt"
    names = pickled_globals(shard)  # beyond tensors: what a plain weights_only load refuses
    assert "numpy._core.multiarray._reconstruct" in names and "megatron.core.enums.ModelType" in names

    loaded = load_model(ckpt, device="cpu")  # the path generate, eval and chat take
    assert loaded.source == "mcore" and loaded.config.kv_heads == 2 and loaded.config.qkv_bias
    with torch.no_grad():
        assert (loaded.model(TOKENS) - want).abs().max().item() <= 1e-4

    hf_dir = tmp_path / "hf"
    code, out, err = cli("convert", "mcore2hf", "--ckpt-dir", ckpt, "--out-dir", hf_dir, "--tokenizer",
                         tiny_tokenizer_dir)
    assert code == 0, err
    assert "TP=1, PP=1" in out
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        assert (hf(TOKENS).logits - want).abs().max().item() <= 1e-4

    prompt = ("--prompt", "hello world", "--max-new-tokens", 6)
    code, from_mcore, err = cli("generate", "--ckpt-dir", ckpt, "--tokenizer", tiny_tokenizer_dir, *prompt)
    assert code == 0, err
    assert "megatron-core" in err
    code, from_hf, err = cli("generate", "--ckpt-dir", hf_dir, *prompt)
    assert code == 0, err
    assert from_mcore == from_hf

    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. hello world, one two three. " * 6)
    ppl = {}
    for name, src, extra in (("mcore", ckpt, ("--tokenizer", tiny_tokenizer_dir)), ("hf", hf_dir, ())):
        out_dir = tmp_path / f"eval_{name}"
        code, _, err = cli("eval", "run", "--task", "ppl", "--ckpt-dir", src, "--data-dir", text, "--ppl-window", 32,
                           "--out-dir", out_dir, "--device", "cpu", *extra)
        assert code == 0, err
        doc = json.loads((out_dir / "results.json").read_text())
        assert doc["model"]["source"] == name
        ppl[name] = doc["tasks"]["ppl"]["metrics"]["ppl"]
    assert ppl["mcore"] == pytest.approx(ppl["hf"], rel=1e-5)
