"""Shared fixtures for the trainer tests: a tiny deterministic "gpt" dataset plugin registered on the real
plugin bus (so the trainer reaches it exactly as it reaches llmctl-data's), one CPU thread, tiny configs."""

from __future__ import annotations

import pytest
from train_helpers import PatternDataset

from llmctl.core.plugins import get_bus, hookimpl

class _Plugin:
    @hookimpl
    def register_datasets(self, register):
        register("pattern", PatternDataset)


@pytest.fixture(autouse=True)
def one_thread():
    """CPU fp32 results are bit-reproducible run to run with a fixed thread count; one is also the fastest
    on a shared 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def pattern_data(tmp_path):
    """A two-source blend spec ("en", "zh") for the "pattern" dataset."""
    bus = get_bus()
    if not bus.pm.has_plugin("test-pattern-dataset"):
        bus.register_plugin(_Plugin(), "test-pattern-dataset")
    return f"0.5 {tmp_path / 'en'} 0.5 {tmp_path / 'zh'}"


@pytest.fixture
def tiny_cfg(tmp_path, pattern_data):
    """A factory of resolved tiny configs over the pattern data; keyword overrides are `section.key=value`."""
    from llmctl.core.train import load_train_config

    def make(*overrides: str, name: str = "run"):
        base = [f"data.path={pattern_data}", "data.dataset=pattern", "data.seq_length=32",
                "train.train_iters=6", "train.global_batch_size=8", "train.micro_batch_size=4",
                "train.lr=3e-3", "train.warmup_iters=2", "eval.iters=1", "eval.interval=0",
                f"checkpoint.dir={tmp_path / name / 'ckpt'}", "checkpoint.interval=0",
                f"logging.dir={tmp_path / name / 'logs'}", "logging.interval=1", "logging.name=run",
                "model.max_seq_len=64"]
        return load_train_config("tiny", [*base, *overrides])

    return make


@pytest.fixture(scope="session")
def engine_plugins(tmp_path_factory):
    """tests/plugins' fault-injection callbacks and toy third-party Task, installed as real distributions; a
    subprocess with this dir on PYTHONPATH discovers them through their entry points."""
    from plugin_sites import install_plugins

    return install_plugins(["llmctl_faults", "llmctl_toy_task"], tmp_path_factory.mktemp("engine-plugins"))


@pytest.fixture(scope="session")
def staged_corpora(tmp_path_factory):
    """Four domains (web, code, books, hq) in Megatron's format, a word tokenizer, two held-out sets."""
    from stage_helpers import write_corpora

    return write_corpora(tmp_path_factory.mktemp("staged-corpora"))


@pytest.fixture(scope="session")
def staged_reference(staged_corpora, tmp_path_factory):
    """The uninterrupted 1-process tiny-staged run (checkpoints every 5 steps) the staged tests compare with."""
    from stage_helpers import pretrain_here, staged_sets

    run = tmp_path_factory.mktemp("staged-reference")
    pretrain_here(staged_sets(staged_corpora, run))
    return run
