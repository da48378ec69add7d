"""Layouts the model-parallel strategy cannot run are one-line errors before any process group starts (what
`llmctl pretrain --nproc-per-node N` checks before it launches torchrun)."""

from __future__ import annotations

import pytest

from llmctl.core.errors import UserError
from llmctl.core.plugins import lookup
from llmctl.core.train import load_train_config


def preflight(world: int, *overrides: str):
    cfg = load_train_config("tiny", ["data.path=unused", "data.seq_length=30", "train.global_batch_size=8",
                                     "train.micro_batch_size=1", "model.num_layers=4", *overrides])
    return lookup("parallelisms", "model_parallel").preflight(cfg, world)


@pytest.mark.parametrize("world, overrides, message", [
    (2, ["parallel.tp=2", "model.ffn_hidden_size=177"], "parallel.tp 2 does not divide model.ffn_hidden_size 177"),
    (4, ["parallel.cp=4"], "data.seq_length divisible by 2 x cp = 8, got 30"),
    (2, ["parallel.pp=2", "model.tie_embeddings=true"], "untie it"),
    (4, ["parallel.pp=2", "parallel.cp=2", "data.seq_length=32"], "pp and parallel.cp together"),
    (2, ["parallel.pp=2", "parallel.pp_schedule=zb"], "'zb' is not one of 1f1b, gpipe"),
])
def test_refused_before_any_process_group(world, overrides, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")):
        preflight(world, *overrides)


def test_any_vocab_size_runs_at_any_tp():
    """Megatron's padding: the rows are a multiple of make_vocab_size_divisible_by x TP (default 128)."""
    for tp, divisible_by, padded in ((2, 128, 1024), (3, 128, 1152), (2, 1, 1024), (4, 3, 1032)):
        cfg = load_train_config("tiny", ["model.vocab_size=1023", f"parallel.tp={tp}",
                                         f"model.make_vocab_size_divisible_by={divisible_by}"])
        assert (cfg.model.vocab_size, cfg.model.padded_vocab_size) == (1023, padded)
    assert preflight(2, "parallel.tp=2", "model.vocab_size=1023").tp == 2


def test_layouts_it_runs():
    layout = preflight(4, "parallel.pp=2", "parallel.tp=2", "parallel.num_layer_list=3,1")
    assert (layout.dp, layout.tp, layout.pp, layout.layers_per_stage) == (1, 2, 2, (3, 1))
    assert preflight(4, "parallel.cp=2", "data.seq_length=32").dp == 2
