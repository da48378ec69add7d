"""HF <-> native weight names and configs, one adapter per family (llama, qwen2). Pure mapping, no I/O.

Families are registered on the plugin bus (`register_models(register)` -> `register(family, ModelSpec(hf=...))`), so a
plugin can add one. Torch-free: `llmctl plugins` lists the families on a box without torch."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import UserError
from ..model_config import ModelConfig

# native name (per layer, `{i}`) -> HF name; identical for llama and qwen2 except qkv biases.
_LAYER_MAP = {
    "layers.{i}.input_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "layers.{i}.attn.q_proj.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "layers.{i}.attn.k_proj.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "layers.{i}.attn.v_proj.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "layers.{i}.attn.o_proj.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "layers.{i}.post_attn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "layers.{i}.mlp.gate_proj.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "layers.{i}.mlp.up_proj.weight": "model.layers.{i}.mlp.up_proj.weight",
    "layers.{i}.mlp.down_proj.weight": "model.layers.{i}.mlp.down_proj.weight",
}
_BIAS_MAP = {
    "layers.{i}.attn.q_proj.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "layers.{i}.attn.k_proj.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "layers.{i}.attn.v_proj.bias": "model.layers.{i}.self_attn.v_proj.bias",
}
_GLOBAL_MAP = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
               "lm_head.weight": "lm_head.weight"}


@dataclasses.dataclass(frozen=True)
class HFAdapter:
    family: str
    architecture: str
    model_type: str

    def name_map(self, cfg: ModelConfig) -> dict[str, str]:
        """native -> HF parameter names for this config (tied embeddings drop lm_head)."""
        names = dict(_GLOBAL_MAP)
        if cfg.tie_embeddings:
            names.pop("lm_head.weight")
        per_layer = dict(_LAYER_MAP, **(_BIAS_MAP if cfg.qkv_bias else {}))
        for i in range(cfg.num_layers):
            names.update({k.format(i=i): v.format(i=i) for k, v in per_layer.items()})
        return names

    def config_from_hf(self, hf: dict[str, Any]) -> ModelConfig:
        def get(key, default=None):
            return hf.get(key, default)

        rope_scaling = get("rope_scaling") or None
        if rope_scaling is None and isinstance(get("rope_parameters"), dict):  # transformers >= 5
            rp = get("rope_parameters")
            rope_scaling = rp if rp.get("rope_type", "default") != "default" else None
        rope_theta = get("rope_theta") or (get("rope_parameters") or {}).get("rope_theta") or 10000.0
        cfg = ModelConfig(
            vocab_size=get("vocab_size"), hidden_size=get("hidden_size"), num_layers=get("num_hidden_layers"),
            num_heads=get("num_attention_heads"), num_kv_heads=get("num_key_value_heads"),
            ffn_hidden_size=get("intermediate_size"), max_seq_len=get("max_position_embeddings", 4096),
            rope_theta=float(rope_theta), rope_scaling=_clean_rope(rope_scaling), norm_eps=get("rms_norm_eps", 1e-6),
            qkv_bias=bool(get("attention_bias", self.family == "qwen2")),
            tie_embeddings=bool(get("tie_word_embeddings", False)), family=self.family,
            init_std=get("initializer_range", 0.02),
        )
        head_dim = get("head_dim")
        if head_dim and head_dim != cfg.head_dim:
            raise UserError(f"HF config head_dim={head_dim} != hidden_size/num_heads={cfg.head_dim}: not supported")
        if get("hidden_act", "silu") != "silu":
            raise UserError(f"HF config hidden_act={get('hidden_act')!r}: only silu (SwiGLU) is supported")
        if get("mlp_bias"):
            raise UserError("HF config mlp_bias=true is not supported")
        return cfg

    def config_to_hf(self, cfg: ModelConfig, **extra: Any) -> dict[str, Any]:
        hf = {
            "architectures": [self.architecture], "model_type": self.model_type,
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.kv_heads,
            "intermediate_size": cfg.ffn_hidden_size, "max_position_embeddings": cfg.max_seq_len,
            "rope_theta": cfg.rope_theta, "rope_scaling": cfg.rope_scaling, "rms_norm_eps": cfg.norm_eps,
            "tie_word_embeddings": cfg.tie_embeddings, "hidden_act": "silu", "initializer_range": cfg.init_std,
            "torch_dtype": "float32", "use_cache": True,
        }
        if self.family == "llama":
            hf.update(attention_bias=cfg.qkv_bias, mlp_bias=False, head_dim=cfg.head_dim)
        elif not cfg.qkv_bias:
            raise UserError("qwen2 family always has qkv biases; set model.qkv_bias: true or family: llama")
        hf.update(extra)
        return hf


def _clean_rope(rs: dict | None) -> dict | None:
    if not rs:
        return None
    rope_type = rs.get("rope_type", rs.get("type"))
    if rope_type in (None, "default"):
        return None
    if rope_type != "llama3":
        raise UserError(f"HF rope scaling type '{rope_type}' is not supported (supported: llama3)")
    keep = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    return {"rope_type": "llama3", **{k: rs[k] for k in keep if k in rs}}


#: llmctl-core's built-in families, registered through its plugin (builtins.register_models).
ADAPTERS = {
    "llama": HFAdapter("llama", "LlamaForCausalLM", "llama"),
    "qwen2": HFAdapter("qwen2", "Qwen2ForCausalLM", "qwen2"),
}


def registered_adapters() -> dict[str, HFAdapter]:
    from ..plugins import get_bus

    return {name: entry.value.hf for name, entry in get_bus().registry("models").items()}


def adapter_for_hf_config(hf: dict[str, Any], source: str = "config.json") -> HFAdapter:
    archs = hf.get("architectures") or []
    adapters = registered_adapters().values()
    for adapter in adapters:
        if adapter.architecture in archs or hf.get("model_type") == adapter.model_type:
            return adapter
    raise UserError(f"{source}: unsupported architecture {archs or hf.get('model_type')!r}; "
                    f"supported: {', '.join(a.architecture for a in adapters)}")


def adapter_for(cfg: ModelConfig) -> HFAdapter:
    adapters = registered_adapters()
    if cfg.family not in adapters:
        raise UserError(f"model.family '{cfg.family}' has no HF adapter; families: {', '.join(adapters)}")
    return adapters[cfg.family]
