"""What a model family registers on the plugin bus (`register_models(register)` -> `register(family, spec)`):
how its Hugging Face config and weight names map to llmctl's (`hf`: config and state-dict adapter), which
megatron-core state-dict layout its checkpoints use (`mcore`, see `nn/mcore.py`), and how a tensor-parallel
plan is applied to it (`parallelize`, a "module:function" that llmctl-parallel or a plugin provides). Torch-free,
so `llmctl plugins` lists families on a box without torch."""

from __future__ import annotations

import dataclasses

from .nn.hf_adapters import HFAdapter


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    family: str
    hf: HFAdapter
    mcore: str | None = "gpt"
    parallelize: str | None = None
