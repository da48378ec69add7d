"""Pretraining: `pretrain(cfg)` trains per a TrainConfig (YAML sections model/data/train/eval/checkpoint/
logging/guards) and returns a PretrainResult. The torch parts load on first use, so importing the config or
the metric sinks from here stays torch-free.

    from llmctl.core.train import load_train_config, pretrain
    cfg = load_train_config("tiny", ["data.path=data/corpus", "data.tokenizer=tok"])
    result = pretrain(cfg, stop_at_step=50)        # save and return after step 50
    result = pretrain(cfg, resume="auto")          # continue to train_iters
"""

from __future__ import annotations

from .config import TrainConfig, load_train_config, preset_names

_LAZY = {"pretrain": "loop", "PretrainResult": "loop", "Trainer": "loop"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)


__all__ = ["TrainConfig", "load_train_config", "preset_names", "pretrain", "PretrainResult", "Trainer"]
