"""HF / native <-> Megatron-core checkpoints through the CLI: bit-identical round trips at TP2·PP2 and TP1·PP1,
the fused QKV / fc1 shard layout checked against the HF weights, PP layer lists, and one-line refusals."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from core_helpers import HF_KINDS, make_hf_model, pickled_globals
from llmctl.core.nn.loading import load_model
from llmctl.core.tokenizer import load_tokenizer
from safetensors.torch import load_file

pytest.importorskip("transformers")


def _shard(path):
    import argparse as _argparse

    with torch.serialization.safe_globals([_argparse.Namespace]):
        return torch.load(path, weights_only=True)


def _save_hf(tmp_path, kind, tok_dir=None, **kw):
    hf = make_hf_model(kind, **kw)
    hf_dir = tmp_path / "hf"
    hf.save_pretrained(hf_dir)
    if tok_dir is not None:
        load_tokenizer(tok_dir).hf.save_pretrained(hf_dir)
    return hf, hf_dir


def _one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("tp,pp", [(2, 2), (1, 1)])
@pytest.mark.parametrize("kind", HF_KINDS)
def test_hf_mcore_hf_round_trip_is_bit_identical(kind, tp, pp, tmp_path, cli, tiny_tokenizer_dir):
    hf, hf_dir = _save_hf(tmp_path, kind, tiny_tokenizer_dir)
    mc, back = tmp_path / "mcore", tmp_path / "back"
    to, frm = ("hf2mcore", "mcore2hf") if tp > 1 else ("hf-to-mcore", "mcore-to-hf")
    code, out, err = cli("convert", to, "--hf-dir", hf_dir, "--out-dir", mc,
                         "--target-tensor-parallel-size", tp, "--target-pipeline-parallel-size", pp)
    assert code == 0, err
    ranks = sorted(p.name for p in (mc / "iter_0000001").iterdir() if p.name.startswith("mp_rank"))
    want = [f"mp_rank_{t:02d}" + (f"_{s:03d}" if pp > 1 else "") for t in range(tp) for s in range(pp)]
    assert ranks == sorted(want)
    assert (mc / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    first = _shard(mc / "iter_0000001" / want[0] / "model_optim_rng.pt")
    assert set(first) == {"args", "checkpoint_version", "iteration", "model"}
    assert isinstance(first["args"], argparse.Namespace) and first["checkpoint_version"] == 3.0
    assert first["args"].tensor_model_parallel_size == tp and first["args"].pipeline_model_parallel_size == pp

    code, out, err = cli("convert", frm, "--ckpt-dir", mc, "--out-dir", back)
    assert code == 0, err
    assert f"TP={tp}, PP={pp}" in out
    a, b = load_file(hf_dir / "model.safetensors"), load_file(back / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    assert json.loads((back / "config.json").read_text())["tie_word_embeddings"] == hf.config.tie_word_embeddings

    loaded = load_model(mc, device="cpu")  # what generate / eval / chat use
    assert loaded.source == "mcore" and loaded.tokenizer is not None
    x = torch.randint(0, hf.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (loaded.model(x) - hf(x).logits).abs().max().item() <= 1e-4


def test_tp2_shards_concatenate_group_by_group(tmp_path, cli):
    """linear_qkv rank r holds query groups [r*ng/tp, (r+1)*ng/tp) whole; fc1 rank r holds [gate_r; up_r]."""
    hf, hf_dir = _save_hf(tmp_path, "qwen2-gqa-tied-bias", num_key_value_heads=2, num_attention_heads=4)
    for tp in (1, 2):
        code, _, err = cli("convert", "hf2mcore", "--hf-dir", hf_dir, "--out-dir", tmp_path / f"tp{tp}",
                           "--target-tensor-parallel-size", tp)
        assert code == 0, err
    it = "iter_0000001"
    tp1 = _shard(tmp_path / "tp1" / it / "mp_rank_00" / "model_optim_rng.pt")["model"]
    tp2 = [_shard(tmp_path / "tp2" / it / f"mp_rank_{r:02d}" / "model_optim_rng.pt")["model"] for r in range(2)]
    c = hf.config
    hd, ng, per = c.hidden_size // c.num_attention_heads, c.num_key_value_heads, c.num_attention_heads // 2
    attn = hf.model.layers[0].self_attn
    for suffix, hf_of in (("weight", lambda m: m.weight), ("bias", lambda m: m.bias)):
        q, k, v = (hf_of(m).detach() for m in (attn.q_proj, attn.k_proj, attn.v_proj))
        fused = tp1[f"decoder.layers.0.self_attention.linear_qkv.{suffix}"]
        groups = fused.reshape(ng, (per + 2) * hd, *fused.shape[1:])
        for g in range(ng):  # per group: its query heads, then its key head, then its value head
            want = torch.cat([q[g * per * hd:(g + 1) * per * hd], k[g * hd:(g + 1) * hd], v[g * hd:(g + 1) * hd]])
            assert torch.equal(groups[g], want)
        shards = [s[f"decoder.layers.0.self_attention.linear_qkv.{suffix}"] for s in tp2]
        for r, shard in enumerate(shards):  # rank r: ng/tp whole groups
            assert torch.equal(shard.reshape(ng // 2, -1, *fused.shape[1:]), groups[r * ng // 2:(r + 1) * ng // 2])
        assert torch.equal(torch.cat(shards), fused)
    mlp = hf.model.layers[0].mlp
    gate, up = mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach()
    assert torch.equal(tp1["decoder.layers.0.mlp.linear_fc1.weight"], torch.cat([gate, up]))
    f = c.intermediate_size // 2
    for r, s in enumerate(tp2):
        want = torch.cat([gate[r * f:(r + 1) * f], up[r * f:(r + 1) * f]])
        assert torch.equal(s["decoder.layers.0.mlp.linear_fc1.weight"], want)
    fc2 = [s["decoder.layers.0.mlp.linear_fc2.weight"] for s in tp2]
    assert torch.equal(torch.cat(fc2, dim=1), tp1["decoder.layers.0.mlp.linear_fc2.weight"])


def test_num_layer_list_places_layers_and_native_round_trip(tmp_path, cli, tiny_tokenizer_dir):
    hf, hf_dir = _save_hf(tmp_path, "llama-gqa-untied-llama3rope", tiny_tokenizer_dir, num_hidden_layers=4)
    code, _, err = cli("convert", "hf-to-native", "--hf-dir", hf_dir, "--out-dir", tmp_path / "nat")
    assert code == 0, err
    code, _, err = cli("convert", "native-to-mcore", "--ckpt-dir", tmp_path / "nat", "--out-dir", tmp_path / "mc",
                       "--target-tensor-parallel-size", 2, "--target-pipeline-parallel-size", 2,
                       "--num-layer-list", "1,3")
    assert code == 0, err
    it = tmp_path / "mc" / "iter_0000000"
    for stage, n_layers in ((0, 1), (1, 3)):
        model = _shard(it / f"mp_rank_01_{stage:03d}" / "model_optim_rng.pt")["model"]
        layers = {int(k.split(".")[2]) for k in model if k.startswith("decoder.layers.")}
        assert layers == set(range(n_layers))  # local indices restart on every stage
        assert ("embedding.word_embeddings.weight" in model) == (stage == 0)
        assert ("output_layer.weight" in model) == (stage == 1)
    code, out, err = cli("convert", "mcore-to-native", "--ckpt-dir", tmp_path / "mc", "--out-dir", tmp_path / "nat2")
    assert code == 0, err
    assert "layers per stage 1,3" in out
    a = load_model(tmp_path / "nat", device="cpu").model.state_dict()
    b = load_model(tmp_path / "nat2", device="cpu")
    assert b.source == "native" and b.config.rope_scaling == load_model(tmp_path / "nat", device="cpu").config.rope_scaling
    assert all(torch.equal(a[k], v) for k, v in b.model.state_dict().items())
    code, out, err = cli("generate", "--ckpt-dir", tmp_path / "mc", "--prompt", "hello", "--max-new-tokens", 4)
    assert code == 0, err
    code2, out2, _ = cli("generate", "--ckpt-dir", tmp_path / "nat", "--prompt", "hello", "--max-new-tokens", 4)
    assert code2 == 0 and out == out2


@pytest.mark.parametrize("padding, rows, divisible_by", [
    (("--padded-vocab-size", 336), 336, 1),  # MindSpeed's explicit size: 168 rows per TP rank
    (("--make-vocab-size-divisible-by", 128), 512, 128),  # Megatron's rule: a multiple of 128 x TP 2
    ((), 320, 1),  # MindSpeed's converter default: no padding
])
@pytest.mark.parametrize("kind", ["llama-gqa-untied-llama3rope", "qwen2-gqa-tied-bias"])
def test_padded_vocab_size_pads_with_zeros_and_mcore2hf_drops_it(kind, padding, rows, divisible_by, tmp_path, cli):
    hf, hf_dir = _save_hf(tmp_path, kind)  # vocab 320
    mc = tmp_path / "mc"
    code, _, err = cli("convert", "hf2mcore", "--hf-dir", hf_dir, "--out-dir", mc, *padding,
                       "--target-tensor-parallel-size", 2)
    assert code == 0, err
    shards = [_shard(mc / "iter_0000001" / f"mp_rank_{r:02d}" / "model_optim_rng.pt") for r in range(2)]
    args = shards[0]["args"]
    assert (args.padded_vocab_size, args.vocab_size, args.make_vocab_size_divisible_by) == (rows, 320, divisible_by)
    names = ["embedding.word_embeddings.weight"] + ([] if hf.config.tie_word_embeddings else ["output_layer.weight"])
    src = {"embedding.word_embeddings.weight": hf.model.embed_tokens.weight, "output_layer.weight": hf.lm_head.weight}
    for name in names:
        full = torch.cat([s["model"][name] for s in shards])
        assert full.shape[0] == rows and torch.equal(full[:320], src[name].detach())
        assert not full[320:].any()
    code, out, err = cli("convert", "mcore2hf", "--ckpt-dir", mc, "--out-dir", tmp_path / "back")
    assert code == 0, err
    assert json.loads((tmp_path / "back" / "config.json").read_text())["vocab_size"] == 320
    a, b = load_file(hf_dir / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    code, _, err = cli("convert", "hf2mcore", "--hf-dir", hf_dir, "--out-dir", tmp_path / "x",
                       "--padded-vocab-size", 300)
    _one_line_error(code, err, "--padded-vocab-size 300", "320")


class _Plant:
    """Unpickling this would create a file: proof that a refused checkpoint ran nothing."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _megatron_rng_state(extra=None):
    """Megatron's get_rng_state() on a CPU run: python's and numpy's state tuples (an ndarray inside) and torch's."""
    import random

    import numpy as np

    state = {"random_rng_state": random.getstate(), "np_rng_state": np.random.get_state(),
             "torch_rng_state": torch.get_rng_state(), "rng_tracker_states": {}}
    return [{**state, **(extra or {})}]


def test_training_save_with_numpy_rng_state_loads(tmp_path, cli):
    """A Megatron training save pickles numpy's RNG state next to the weights: it loads, the RNG part is ignored."""
    import numpy as np

    hf, hf_dir = _save_hf(tmp_path, "qwen2-gqa-tied-bias")
    mc = tmp_path / "mc"
    assert cli("convert", "hf2mcore", "--hf-dir", hf_dir, "--out-dir", mc)[0] == 0
    f = mc / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt"
    state = _shard(f)
    state.update(rng_state=_megatron_rng_state({"np_generator": np.random.default_rng(0)}),
                 opt_param_scheduler={"max_lr": 3e-4, "num_steps": 40, "lr_decay_style": "cosine"},
                 num_floating_point_operations_so_far=np.float64(1e12))
    torch.save(state, f)
    assert "numpy._core.multiarray._reconstruct" in pickled_globals(f)
    code, out, err = cli("convert", "mcore2hf", "--ckpt-dir", mc, "--out-dir", tmp_path / "back")
    assert code == 0, err
    a, b = load_file(hf_dir / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from llmctl.core.nn.mcore_io import load_rank_file
    from llmctl.core.nn.mcore_unpickle import Placeholder

    rng = load_rank_file(f)["rng_state"][0]
    assert isinstance(rng["np_rng_state"][1], Placeholder) and isinstance(rng["np_generator"], Placeholder)


def test_refuses_any_other_pickled_object_and_runs_nothing(tmp_path, cli):
    hf, hf_dir = _save_hf(tmp_path, "llama-mha-tied")
    mc = tmp_path / "mc"
    assert cli("convert", "hf2mcore", "--hf-dir", hf_dir, "--out-dir", mc)[0] == 0
    f = mc / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt"
    clean = _shard(f)
    marker = tmp_path / "pwned"
    for where in ("top", "rng_state"):  # next to the weights, and hidden among the numpy RNG stand-ins
        state = dict(clean)
        if where == "top":
            state["extra"] = _Plant(marker)
        else:
            state["rng_state"] = _megatron_rng_state({"np_rng_state": _Plant(marker)})
        torch.save(state, f)
        for args in (("convert", "mcore2hf", "--ckpt-dir", mc, "--out-dir", tmp_path / "out"),
                     ("generate", "--ckpt-dir", mc, "--prompt", "x", "--tokenizer", hf_dir),
                     ("convert", "mcore-to-native", "--ckpt-dir", mc, "--out-dir", tmp_path / "out2")):
            code, _, err = cli(*args)
            _one_line_error(code, err, str(f), "refused", "open")
        assert not marker.exists() and not (tmp_path / "out").exists()


def test_bad_layouts_are_one_line_errors(tmp_path, cli):
    hf, hf_dir = _save_hf(tmp_path, "llama-gqa-untied-llama3rope")  # 2 KV heads, 2 layers
    code, _, err = cli("convert", "hf2mcore", "--hf-dir", hf_dir, "--out-dir", tmp_path / "a",
                       "--target-tensor-parallel-size", 4)
    _one_line_error(code, err, "tensor parallel size 4", "2 KV heads")
    code, _, err = cli("convert", "hf2mcore", "--hf-dir", hf_dir, "--out-dir", tmp_path / "b",
                       "--target-pipeline-parallel-size", 2, "--num-layer-list", "1,2")
    _one_line_error(code, err, "--num-layer-list 1,2", "sums to 3", "2 layers")
    code, _, err = cli("convert", "hf2mcore", "--hf-dir", hf_dir, "--out-dir", tmp_path / "c",
                       "--target-pipeline-parallel-size", 3)
    _one_line_error(code, err, "pipeline size 3")
    assert not any((tmp_path / d).exists() for d in "abc")

    mc = tmp_path / "mc"
    assert cli("convert", "hf2mcore", "--hf-dir", hf_dir, "--out-dir", mc)[0] == 0
    f = mc / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt"
    state = _shard(f)
    del state["args"].hidden_size
    torch.save(state, f)
    code, _, err = cli("convert", "mcore2hf", "--ckpt-dir", mc, "--out-dir", tmp_path / "out")
    _one_line_error(code, err, str(f), "'hidden_size'")
    code, _, err = cli("generate", "--ckpt-dir", mc, "--prompt", "x", "--tokenizer", hf_dir)
    _one_line_error(code, err, "'hidden_size'")


def test_save_mcore_checkpoint_contract(tmp_path):
    """The function the training driver calls for `checkpoint.format: mcore`: atomic, pointer last, readable."""
    from llmctl.core.model_config import get_preset
    from llmctl.core.nn.build import build_model
    from llmctl.core.nn.mcore_io import save_mcore_checkpoint

    cfg = get_preset("tiny")
    torch.manual_seed(0)
    model = build_model(cfg)
    it_dir = save_mcore_checkpoint(tmp_path / "ck", 5, model.state_dict(), cfg, tp=2, pp=2)
    assert it_dir == tmp_path / "ck" / "iter_0000005"
    assert (tmp_path / "ck" / "latest_checkpointed_iteration.txt").read_text() == "5\n"
    assert not [p for p in (tmp_path / "ck").iterdir() if p.name.startswith(".")]  # no temp dirs left
    loaded = load_model(tmp_path / "ck", device="cpu")
    assert loaded.source == "mcore"
    ref = model.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in loaded.model.state_dict().items())
