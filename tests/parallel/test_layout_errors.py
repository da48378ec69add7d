"""A bad parallel layout is one line (exit 2) before any process group starts: from `llmctl pretrain
--nproc-per-node N` before torchrun is launched, and inside a torchrun worker before init_process_group."""

from __future__ import annotations

import os

import pytest
import torch.distributed as dist

from llmctl.core.errors import UserError


@pytest.fixture
def no_exec(monkeypatch):
    def refuse(*args):
        raise AssertionError(f"torchrun would have been launched: {args}")

    monkeypatch.setattr(os, "execv", refuse)


@pytest.mark.parametrize("flags, message", [
    (["--nproc-per-node", "2", "--set", "parallel.strategy=fsdp2", "--tp", "3"], "world size 2 != dp"),
    (["--nproc-per-node", "4", "--set", "parallel.strategy=fsdp2", "--tp", "4"], "must divide model.num_heads 4 and the KV heads 2"),
    (["--nproc-per-node", "3", "--set", "parallel.strategy=fsdp2", "--pp", "3"], "pipeline size 3 (parallel.pp) is larger than model.num_layers 2"),
    (["--nproc-per-node", "2", "--set", "parallel.strategy=fsdp2", "--pp", "2", "--num-layer-list", "1,2"],
     "--num-layer-list 1,2 sums to 3 but the model has 2 layers"),
    (["--nproc-per-node", "2", "--set", "train.global_batch_size=6", "--batch-size-per-device", "2"],
     "global batch size 6 is not divisible by train.micro_batch_size 2 x data-parallel size 2"),
    (["--nproc-per-node", "2", "--set", "parallel.zero_1=true"], "unknown config key 'parallel.zero_1' (did you mean 'zero1'"),
])
def test_launcher_refuses_before_torchrun(flags, message, cli, no_exec):
    code, out, err = cli("pretrain", "-c", "tiny", *flags)
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not dist.is_initialized()


def test_lab_env_sets_the_knobs(cli, no_exec, monkeypatch):
    monkeypatch.setenv("TP", "3")
    monkeypatch.setenv("GPUS_PER_NODE", "2")
    code, _, err = cli("pretrain", "-c", "tiny", "--set", "parallel.strategy=fsdp2", "--lab-env")
    assert code == 2 and "world size 2 != dp 0.666667 x tp 3" in err
    monkeypatch.setenv("TOKENS_PER_STEP", "640")  # 10 x seq 64
    code, out, _ = cli("pretrain", "-c", "tiny", "--set", "parallel.strategy=fsdp2", "--lab-env", "--tp", "1",
                       "--print-config")
    assert code == 0 and "tokens_per_step: 640" in out and "tp: 1" in out


def test_worker_refuses_before_init_process_group(tiny_layout_cfg, monkeypatch):
    from llmctl.parallel.fsdp import FSDP2

    # a torchrun environment whose master is never reached: a check after init_process_group would hang
    monkeypatch.setenv("RANK", "0"), monkeypatch.setenv("WORLD_SIZE", "2"), monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1"), monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(UserError, match="parallel.tp 2 must divide model.num_heads 4 and the KV heads 1"):
        FSDP2(tiny_layout_cfg("parallel.strategy=fsdp2", "parallel.tp=2", "model.num_kv_heads=1"))
    assert not dist.is_initialized()


@pytest.fixture
def tiny_layout_cfg():
    from llmctl.core.train import load_train_config

    return lambda *overrides: load_train_config("tiny", list(overrides))
