"""Shared fixtures for the trainer tests: a tiny deterministic "gpt" dataset plugin registered on the real
plugin bus (so the trainer reaches it exactly as it reaches llmctl-data's), one CPU thread, tiny configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmctl.core.plugins import get_bus, hookimpl

REPO = Path(__file__).resolve().parents[2]


class PatternDataset:
    """Arithmetic token patterns, one stride per source: learnable in a few steps, fully deterministic.
    Same interface as llmctl-data's build_gpt_dataset result."""

    def __init__(self, spec, seq_len, num_samples, seed, split="train"):
        prefixes = [tok for tok in spec.split() if not tok.replace(".", "", 1).isdigit()]  # "0.5 A 0.5 B"
        self.source_names = [str(p) for p in prefixes]
        self.seq, self.n, self.offset = seq_len, num_samples, 7_919 if split == "val" else 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        src = i % len(self.source_names)
        start = (i * 37 + self.offset) % 50
        tokens = (start + np.arange(self.seq + 1) * (src + 1)) % 50 + 3
        return {"tokens": tokens.astype(np.int64), "source": src}


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


def read_jsonl(path):
    import json

    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture
def cli():
    """Run `llmctl ARGS` in-process through the real CLI group: (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from llmctl.cli.main import build_cli

    def run(*args: str):
        result = CliRunner().invoke(build_cli(), [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return run
