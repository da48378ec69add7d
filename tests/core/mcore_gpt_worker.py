"""Runs megatron-core's own GPTModel (local layer spec, RMSNorm, SwiGLU, RoPE, GQA) on a CPU-only torch, in its
own process: `python mcore_gpt_worker.py SPEC.json`. Kept out of the pytest process because megatron-core's
parallel state is process-global.

Each job builds a GPTModel from `config` and either
- "load": loads an llmctl-written shard's `model` dict (strict) and reports missing/unexpected keys, or
- "save": randomises the model and writes its `state_dict()` as a Megatron/MindSpeed training save does
  (`training_save`: args Namespace with the enums `get_model` stores, numpy/python/torch RNG state as
  `get_rng_state` returns it, the LR scheduler's state, no optimizer);
then saves its logits for `tokens`. CPU workarounds (from the issue): `torch.cuda.current_device` answers "cpu",
the TP RNG tracker's fork is a no-op, and an explicit boolean causal mask is passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist


def setup(tmp: Path) -> None:
    warnings.filterwarnings("ignore")
    torch.cuda.current_device = lambda: "cpu"
    dist.init_process_group("gloo", init_method=f"file://{tmp / 'pg'}", rank=0, world_size=1)
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import random as mrandom

    parallel_state.initialize_model_parallel(1, 1)
    mrandom.get_cuda_rng_tracker().fork = lambda *a, **k: contextlib.nullcontext()


def build(c: dict):
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.models.gpt.gpt_model import GPTModel
    from megatron.core.transformer.transformer_config import TransformerConfig

    cfg = TransformerConfig(
        num_layers=c["num_layers"], hidden_size=c["hidden_size"], num_attention_heads=c["num_heads"],
        num_query_groups=c["num_kv_heads"], ffn_hidden_size=c["ffn_hidden_size"], normalization="RMSNorm",
        layernorm_epsilon=c["norm_eps"], gated_linear_unit=True, activation_func=torch.nn.functional.silu,
        add_bias_linear=False, add_qkv_bias=c["qkv_bias"], hidden_dropout=0.0, attention_dropout=0.0,
        use_cpu_initialization=True, bias_activation_fusion=False, bias_dropout_fusion=False,
        masked_softmax_fusion=False, persist_layer_norm=False, gradient_accumulation_fusion=False,
        apply_rope_fusion=False, params_dtype=torch.float32)
    return GPTModel(cfg, get_gpt_layer_local_spec(normalization="RMSNorm"), vocab_size=c["vocab_size"],
                    max_sequence_length=c["max_seq_len"], position_embedding_type="rope",
                    rotary_base=c["rope_theta"], share_embeddings_and_output_weights=c["tied"]).eval()


def logits(model, tokens: torch.Tensor) -> torch.Tensor:
    b, t = tokens.shape
    pos = torch.arange(t).expand(b, t)
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)[None, None]  # True = masked
    with torch.no_grad():
        return model(tokens, pos, mask)


def mindspeed_args(c: dict) -> argparse.Namespace:
    """The args fields a MindSpeed pretrain run pickles (a subset of its ~500: the model's shape)."""
    return argparse.Namespace(
        num_layers=c["num_layers"], hidden_size=c["hidden_size"], ffn_hidden_size=c["ffn_hidden_size"],
        num_attention_heads=c["num_heads"], group_query_attention=c["num_kv_heads"] != c["num_heads"],
        num_query_groups=c["num_kv_heads"], padded_vocab_size=c["vocab_size"],
        max_position_embeddings=c["max_seq_len"], rotary_base=c["rope_theta"], norm_epsilon=c["norm_eps"],
        untie_embeddings_and_output_weights=not c["tied"], add_qkv_bias=c["qkv_bias"], normalization="RMSNorm",
        swiglu=True, position_embedding_type="rope", tensor_model_parallel_size=1, pipeline_model_parallel_size=1,
        params_dtype=torch.float32, use_mcore_models=True, seq_length=c["max_seq_len"], micro_batch_size=1)


def training_save(c: dict, model, iteration: int) -> dict:
    """What megatron/training/checkpointing.py's save_checkpoint writes with --no-save-optim (torch format)."""
    import random

    import numpy as np
    from megatron.core.enums import ModelType
    from megatron.core.tensor_parallel import random as mrandom
    from megatron.core.transformer.enums import AttnBackend

    args = mindspeed_args(c)
    args.model_type, args.attention_backend = ModelType.encoder_or_decoder, AttnBackend.auto  # as get_model sets
    rng_state = {"random_rng_state": random.getstate(), "np_rng_state": np.random.get_state(),
                 "torch_rng_state": torch.get_rng_state(),
                 "rng_tracker_states": mrandom.get_cuda_rng_tracker().get_states()}
    scheduler = {"max_lr": 3e-4, "lr_warmup_steps": 2, "num_steps": iteration * 4, "lr_decay_style": "cosine",
                 "lr_decay_steps": 100, "min_lr": 3e-5, "start_wd": 0.1, "end_wd": 0.1, "wd_incr_style": "constant"}
    return {"args": args, "checkpoint_version": 3.0, "iteration": iteration, "model": model.state_dict(),
            "opt_param_scheduler": scheduler, "rng_state": [rng_state],
            "num_floating_point_operations_so_far": 1.5e12}


def main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    setup(Path(spec["tmp"]))
    results = []
    for job in spec["jobs"]:
        model = build(job["config"])
        tokens = torch.tensor(job["tokens"])
        res: dict = {"name": job["name"]}
        if job["mode"] == "load":
            with torch.serialization.safe_globals([argparse.Namespace]):
                shard = torch.load(job["file"], weights_only=True)
            theirs = set(model.state_dict())
            res["missing"] = sorted(theirs - set(shard["model"]))
            res["unexpected"] = sorted(set(shard["model"]) - theirs)
            model.load_state_dict(shard["model"], strict=True)
        else:
            torch.manual_seed(job["seed"])
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(1 + 0.1 * torch.randn_like(p) if "layernorm" in name else 0.2 * torch.randn_like(p))
            out = Path(job["dir"])
            (out / "iter_0000007" / "mp_rank_00").mkdir(parents=True)
            torch.save(training_save(job["config"], model, 7),
                       out / "iter_0000007" / "mp_rank_00" / "model_optim_rng.pt")
            (out / "latest_checkpointed_iteration.txt").write_text("7")
        torch.save(logits(model, tokens), job["logits"])
        results.append(res)
    Path(spec["out"]).write_text(json.dumps(results))
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
    from llmctl.cli.main import leave_finished_worker

    leave_finished_worker()  # as `llmctl` under torchrun: no interpreter teardown after a finished run
