"""A litgpt `pretrain` YAML (what the single-GPU MiniLM tutorial trains from) as an llmctl pretraining config.

Every litgpt key either maps to an llmctl key (MAPPING, the table docs/labs/single-gpu-minilm.md prints), is
checked to hold the only value llmctl implements (REQUIRED: a llama block is RMSNorm + SwiGLU, full RoPE,
sequential residual), or is dropped with a note saying why and what to do instead (DROPPED: litdata paths,
device counts). An unknown key is an error with a "did you mean", as in llmctl's own configs. A key the YAML
leaves out takes litgpt's default (LITGPT_DEFAULTS), so the run trains what `litgpt pretrain` would have.
Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import did_you_mean, load_yaml
from .errors import UserError

PRECISION = {"bf16-mixed": "bf16", "bf16-true": "bf16", "16-mixed": "fp16", "16-true": "fp16",
             "32-true": "fp32", "32": "fp32", "bf16": "bf16", "16": "fp16"}
LOGGERS = {"wandb": ["jsonl", "wandb"], "tensorboard": ["jsonl", "tensorboard"], "csv": ["jsonl"]}

#: litgpt key -> llmctl key (the value carried over as it is, or through the function).
MAPPING: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "model_config.n_layer": ("model.num_layers", int),
    "model_config.n_embd": ("model.hidden_size", int),
    "model_config.n_head": ("model.num_heads", int),
    "model_config.n_query_groups": ("model.num_kv_heads", int),
    "model_config.intermediate_size": ("model.ffn_hidden_size", int),
    "model_config.block_size": ("model.max_seq_len", int),
    "model_config.vocab_size": ("model.vocab_size", int),
    "model_config.norm_eps": ("model.norm_eps", float),
    "model_config.rope_base": ("model.rope_theta", float),
    "model_config.attn_bias": ("model.qkv_bias", bool),
    "out_dir": ("checkpoint.dir", str),
    "precision": ("train.dtype", lambda v: PRECISION[str(v)]),
    "initial_checkpoint_dir": ("checkpoint.load", str),
    "train.save_interval": ("checkpoint.interval", int),
    "train.log_interval": ("logging.interval", int),
    "train.global_batch_size": ("train.global_batch_size", int),
    "train.micro_batch_size": ("train.micro_batch_size", int),
    "train.lr_warmup_steps": ("train.warmup_iters", int),
    "train.lr_warmup_fraction": ("train.warmup_fraction", float),
    "train.max_tokens": ("train.train_tokens", int),
    "train.max_steps": ("train.train_iters", int),
    "train.max_seq_length": ("data.seq_length", int),
    "train.tie_embeddings": ("model.tie_embeddings", bool),
    "train.max_norm": ("train.clip_grad", float),
    "train.min_lr": ("train.min_lr", float),
    "eval.interval": ("eval.interval", int),
    "optimizer.init_args.lr": ("train.lr", float),
    "optimizer.init_args.weight_decay": ("train.weight_decay", float),
    "optimizer.init_args.betas": ("train.betas", lambda v: [float(b) for b in v]),
    "optimizer.init_args.eps": ("train.eps", float),
    "tokenizer_dir": ("data.tokenizer", str),
    "logger_name": ("logging.sinks", lambda v: LOGGERS[str(v)]),
    "seed": ("train.seed", int),
}
#: Keys converted by code below, not one-to-one (the doc's table says how).
COMPUTED = {
    "eval.max_iters": "eval.iters: litgpt counts micro-batches, llmctl global batches "
                      "(ceil(max_iters x MBS / GBS))",
    "resume": "checkpoint.resume: true or 'auto' -> auto, a path -> that path, false -> none",
    "model_config.padded_vocab_size": "model.vocab_size when vocab_size is absent; the padding is derived "
                                       "(model.make_vocab_size_divisible_by)",
    "model_config.head_size": "checked: must be n_embd / n_head",
    "optimizer": "AdamW only (torch.optim.AdamW or 'AdamW'); its init_args map as above",
    "optimizer.class_path": "AdamW only",
}
#: Keys llmctl implements with one value only.
REQUIRED = {"model_config.rotary_percentage": 1.0, "model_config.parallel_residual": False,
            "model_config.bias": False, "model_config.norm_class_name": "RMSNorm",
            "model_config.mlp_class_name": "LLaMAMLP", "model_config.scale_embeddings": False,
            "train.epochs": None}
#: Keys with no llmctl config equivalent: dropped, with what to do instead.
DROPPED = {
    "model_name": "a name only (model_config gives the shape)",
    "model_config.name": "a name only",
    "model_config.hf_config": "Hugging Face provenance only",
    "data": "litdata's optimized dataset: tokenize with `llmctl data tokenize` and set data.path "
            "(--data-path)",
    "devices": "processes are a launch flag: `llmctl pretrain --nproc-per-node N`",
    "num_nodes": "nodes are a launch flag: torchrun --nnodes",
    "eval.max_new_tokens": "llmctl validates by loss only; sample with `llmctl generate`",
    "eval.initial_validation": "llmctl validates every eval.interval steps and at the end",
    "eval.final_validation": "llmctl always validates at the end when eval.iters > 0",
}
#: litgpt's defaults (litgpt.args.TrainArgs / EvalArgs, AdamW's init_args) for keys the YAML leaves out.
LITGPT_DEFAULTS = {"train.save_interval": 1000, "train.log_interval": 1, "train.global_batch_size": 512,
                   "train.micro_batch_size": 4, "train.lr_warmup_steps": 2000,
                   "train.max_tokens": 3_000_000_000_000,
                   "train.max_norm": 1.0, "train.min_lr": 4e-5, "train.tie_embeddings": False,
                   "eval.interval": 1000, "eval.max_iters": 100, "optimizer.init_args.lr": 1e-3,
                   "optimizer.init_args.weight_decay": 0.01, "optimizer.init_args.betas": [0.9, 0.999],
                   "seed": 42, "logger_name": "tensorboard"}
NESTED = ("model_config", "train", "eval", "optimizer", "optimizer.init_args")  # mappings walked into
MODEL_NEEDS = ("model_config.n_layer", "model_config.n_embd", "model_config.n_head",
               "model_config.intermediate_size", "model_config.block_size")
KNOWN = set(MAPPING) | set(COMPUTED) | set(REQUIRED) | set(DROPPED) | {"train", "eval", "model_config",
                                                                          "optimizer.init_args"}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"max_norm": 1}} -> {"train.max_norm": 1}; `data` and `optimizer` stay whole as well."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path in NESTED:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _set(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    section, key = dotted.split(".", 1)
    cfg.setdefault(section, {})[key] = value


def convert(litgpt: dict[str, Any], source: str = "litgpt config", data_path: str | None = None
            ) -> tuple[dict[str, Any], list[str]]:
    """(llmctl config dict, notes): notes say what was dropped or computed, one line each."""
    flat = _flatten(litgpt)
    for key in flat:
        if key not in KNOWN:
            raise UserError(f"{source}: unknown litgpt key '{key}'{did_you_mean(key, sorted(KNOWN))}")
    missing = [k for k in MODEL_NEEDS if flat.get(k) is None]
    if missing:
        raise UserError(f"{source}: model_config needs {', '.join(k.split('.', 1)[1] for k in missing)} "
                        "(litgpt's named models are not known to llmctl: give the shape)")
    for key, want in REQUIRED.items():
        if key in flat and flat[key] != want and not (want is None and flat[key] in ("", None)):
            raise UserError(f"{source}: {key}: {flat[key]!r} is not supported (llmctl's llama block has "
                            f"{key.split('.')[-1]} = {want!r})")
    optimizer = flat.pop("optimizer", None)
    class_path = flat.pop("optimizer.class_path", optimizer if isinstance(optimizer, str) else None)
    if class_path not in (None, "AdamW", "torch.optim.AdamW"):
        raise UserError(f"{source}: optimizer {class_path!r} is not supported (llmctl trains with AdamW)")
    values = {**LITGPT_DEFAULTS, **{k: v for k, v in flat.items() if v is not None}}
    if "train.max_steps" in values and "train.max_tokens" in flat and flat["train.max_tokens"] is not None:
        raise UserError(f"{source}: set one of train.max_tokens and train.max_steps "
                        "(llmctl trains to one length)")
    if "train.max_steps" in values:
        values.pop("train.max_tokens")

    cfg: dict[str, Any] = {"model": {"family": "llama"}, "train": {"schedule": "cosine"}}
    notes: list[str] = []
    for key, (target, fn) in MAPPING.items():
        if key in values:
            try:
                _set(cfg, target, fn(values[key]) if fn else values[key])
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{source}: {key}: {values[key]!r} is not a value llmctl can map "
                                f"(to {target})") from None
    m = values
    head = m.get("model_config.head_size")
    if head is not None and int(head) * int(m["model_config.n_head"]) != int(m["model_config.n_embd"]):
        raise UserError(f"{source}: model_config.head_size {head} x n_head {m['model_config.n_head']} != "
                        f"n_embd {m['model_config.n_embd']} (llmctl's head size is hidden / heads)")
    if "model_config.vocab_size" not in m and "model_config.padded_vocab_size" in m:
        cfg["model"]["vocab_size"] = int(m["model_config.padded_vocab_size"])
    cfg.setdefault("data", {}).setdefault("seq_length", int(m["model_config.block_size"]))
    t = cfg["train"]
    iters = math.ceil(int(m["eval.max_iters"]) * t["micro_batch_size"] / t["global_batch_size"])
    cfg["eval"]["iters"] = iters
    notes.append(f"eval.max_iters {m['eval.max_iters']} micro-batches -> eval.iters {iters} global batches")
    resume = litgpt.get("resume")
    if resume not in (None, False, "false", "False"):
        auto = resume in (True, "auto", "True", "true")
        cfg.setdefault("checkpoint", {})["resume"] = "auto" if auto else str(resume)
    if "out_dir" in m:
        cfg.setdefault("logging", {}).update(dir=str(Path(str(m["out_dir"])) / "logs"),
                                              name=Path(str(m["out_dir"])).name)
    if data_path:
        cfg["data"]["path"] = data_path
    for key, why in DROPPED.items():
        if flat.get(key) not in (None, "", {}, False) or (key == "data" and "data" in flat):
            notes.append(f"{key}: dropped; {why}")
    return cfg, notes


def convert_file(path: str | Path, data_path: str | None = None) -> tuple[dict[str, Any], list[str]]:
    data = load_yaml(Path(path))
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a litgpt pretrain config (a YAML mapping)")
    return convert(data, str(path), data_path)
