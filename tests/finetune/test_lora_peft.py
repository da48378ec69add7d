"""LoRA against the real PEFT: the adapter a llmctl run saves loads with `PeftModel.from_pretrained` on the
HF base with no missing or unexpected keys and gives llmctl's logits; `merge_and_unload()` equals
`llmctl finetune merge-lora`; only adapter parameters receive gradients; a target that matches nothing is a
one-line error (exit 2)."""

from __future__ import annotations

import pytest
import torch
import yaml
from finetune_helpers import finetune_cfg, sft_data

from llmctl.core.nn.loading import load_model

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

LORA = ["task.lora.r=4", "task.lora.alpha=8", "train.lr=2e-2"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tok_dir, hf_base):
    """A short LoRA run (MindSpeed's target names, rsLoRA) whose adapters end far from their zero init."""
    from llmctl.core.train.loop import pretrain

    tmp = tmp_path_factory.mktemp("lora")
    cfg = finetune_cfg(tmp, hf_base, sft_data(tmp, tok_dir), "lora", *LORA, "task.lora.rslora=true",
                       "task.lora.targets=[linear_qkv, linear_proj, linear_fc1, linear_fc2]")
    result = pretrain(cfg)
    return result.checkpoint_dir


def _adapter(ckpt):
    from llmctl.core.nn.peft import find_adapter_dir

    return find_adapter_dir(ckpt)


def test_adapter_loads_in_peft_with_llmctl_logits(lora_run, hf_base):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    adapter = _adapter(lora_run)
    keys = set(load_file(str(adapter / "adapter_model.safetensors")))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in keys
    assert len(keys) == 2 * 7 * 2  # A and B x 7 projections x 2 layers

    hf = AutoModelForCausalLM.from_pretrained(hf_base, torch_dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(hf, adapter).eval()
    check = model.load_adapter(adapter, adapter_name="check")  # the load result PEFT computes
    assert [k for k in check.missing_keys if "lora_" in k] == []
    assert check.unexpected_keys == []
    model.set_adapter("default")
    assert any(float(m.lora_B["default"].weight.detach().abs().max()) > 0 for m in model.modules() if hasattr(m, "lora_B"))

    tokens = torch.randint(0, hf.config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(tokens).logits
        base_logits = hf.get_base_model()(tokens).logits if hasattr(hf, "get_base_model") else None
        ours = load_model(hf_base, device="cpu", lora_dir=lora_run).model(tokens)  # merged at load
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-4)
    assert base_logits is None or not torch.allclose(base_logits, want, atol=1e-3)

    # the unmerged training form (LoRALinear swap) gives the same logits
    from llmctl.finetune.lora import apply_lora
    from llmctl.finetune.options import LoraOptions

    cfg = yaml.safe_load((lora_run / "iter_0000004" / "config.yaml").read_text())
    train_form = load_model(hf_base, device="cpu").model
    apply_lora(train_form, LoraOptions(**cfg["task"]["lora"]))
    state = torch.load(lora_run / "iter_0000004" / "mp_rank_00" / "model_optim_rng.pt", weights_only=True)["model"]
    assert state and all(".lora_" in k for k in state)  # the checkpoint keeps the adapters only
    train_form.load_state_dict(state, strict=False)
    with torch.no_grad():
        torch.testing.assert_close(train_form.eval()(tokens), want, rtol=0, atol=1e-4)


def test_merge_and_unload_equals_merge_lora(lora_run, hf_base, tmp_path, cli):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    code, out, err = cli("finetune", "merge-lora", "--base", hf_base, "--lora-dir", lora_run, "--out-dir",
                         tmp_path / "merged")
    assert code == 0, err
    ours = load_file(str(tmp_path / "merged" / "model.safetensors"))
    hf = AutoModelForCausalLM.from_pretrained(hf_base, torch_dtype=torch.float32)
    merged = PeftModel.from_pretrained(hf, _adapter(lora_run)).merge_and_unload().state_dict()
    assert set(ours) == set(merged) - {"lm_head.weight"} or set(ours) == set(merged)
    for k, v in ours.items():
        torch.testing.assert_close(v, merged[k], rtol=0, atol=1e-6)
    base = load_file(str(hf_base / "model.safetensors"))
    assert not torch.equal(ours["model.layers.0.self_attn.q_proj.weight"],
                           base["model.layers.0.self_attn.q_proj.weight"])
    # the merged dir is a complete HF model with the tokenizer: it loads in llmctl and transformers alike
    assert load_model(tmp_path / "merged", device="cpu").tokenizer is not None


def test_only_adapters_receive_gradients(tmp_path, tok_dir, hf_base):
    from llmctl.core.train.loop import Trainer

    cfg = finetune_cfg(tmp_path, hf_base, sft_data(tmp_path, tok_dir), "lora", *LORA, "task.lora.targets=[q, v]")
    trainer = Trainer(cfg)
    try:
        model = trainer.module
        names = {id(p): n for n, p in model.named_parameters()}
        opt_names = {names[id(p)] for g in trainer.optimizer.param_groups for p in g["params"]}
        assert opt_names and all(".lora_" in n for n in opt_names)
        assert {n.split(".")[3] for n in opt_names} == {"q_proj", "v_proj"}
        batch = trainer.task.collate([trainer.train_ds[i] for i in range(2)])
        loss_sum, count, _ = trainer.task.loss(model, batch)
        loss_sum.backward()
        for n, p in model.named_parameters():
            if ".lora_" in n:
                assert p.requires_grad and p.grad is not None, n
            else:
                assert not p.requires_grad and p.grad is None, n
        # B starts at zero (PEFT's init), so B is what the first step moves
        assert all(float(p.grad.abs().max()) > 0 for n, p in model.named_parameters() if "lora_B" in n)
    finally:
        trainer.close()


def test_bf16_base_keeps_fp32_adapters(tmp_path, tok_dir, hf_base):
    from llmctl.core.train.loop import pretrain

    cfg = finetune_cfg(tmp_path, hf_base, sft_data(tmp_path, tok_dir), "lora", *LORA, "task.lora.base_dtype=bf16",
                       "train.dtype=bf16", "train.train_iters=2")
    result = pretrain(cfg)
    state = torch.load(result.checkpoint_dir / "iter_0000002" / "mp_rank_00" / "model_optim_rng.pt",
                       weights_only=True)["model"]
    assert all(v.dtype == torch.float32 for v in state.values())


def test_lora_target_matching_nothing_is_one_line(tmp_path, tok_dir, hf_base, cli):
    data = sft_data(tmp_path, tok_dir)
    cfg = tmp_path / "lora.yaml"
    cfg.write_text(yaml.safe_dump({
        "task": {"method": "lora", "base": str(hf_base), "lora": {"targets": ["q", "attention_dense"]}},
        "data": {"path": str(data), "seq_length": 64},
        "train": {"train_iters": 1, "global_batch_size": 2}, "logging": {"dir": str(tmp_path / "logs")}}))
    code, out, err = cli("finetune", "-c", cfg)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "'attention_dense' matches no module" in lines[0] and "linear_qkv" in lines[0]
    code, _, err = cli("finetune", "-c", cfg, "--set", "task.method=full")
    assert code == 2 and "remove the 'task.lora' section" in err


def test_lora_resume_matches_an_uninterrupted_run(tmp_path, tok_dir, hf_base):
    """Adapter-only checkpoints resume exactly (optimizer, schedule, RNG, data position) on the driver."""
    from safetensors.torch import load_file

    from llmctl.core.train.loop import pretrain

    data = sft_data(tmp_path, tok_dir)
    whole = pretrain(finetune_cfg(tmp_path, hf_base, data, "lora", *LORA, name="whole")).checkpoint_dir
    cfg = finetune_cfg(tmp_path, hf_base, data, "lora", *LORA, name="split")
    pretrain(cfg, stop_at_step=2)
    split = pretrain(finetune_cfg(tmp_path, hf_base, data, "lora", *LORA, name="split"), resume="auto").checkpoint_dir
    a = load_file(str(whole / "iter_0000004" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(split / "iter_0000004" / "adapter" / "adapter_model.safetensors"))
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert (split / "iter_0000002" / "adapter" / "adapter_config.json").is_file()
