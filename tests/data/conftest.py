"""Fixtures for the llmctl-data tests; the helpers they use live in data_helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import fixture_texts, write_jsonl


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch):
    monkeypatch.setenv("LLMCTL_PROGRESS", "0")


@pytest.fixture(scope="session")
def fixture_corpus(tmp_path_factory, real_fixtures) -> Path:
    """The real fixture texts as one jsonl file (built in tmp, never copied into the repo)."""
    path = tmp_path_factory.mktemp("fixture_corpus") / "corpus.jsonl"
    return write_jsonl(path, [{"text": t} for t in fixture_texts()])


@pytest.fixture(scope="session")
def bytelevel_tok(tmp_path_factory, fixture_corpus) -> Path:
    """A byte-level BPE tokenizer trained on the fixture corpus by `llmctl data train-tokenizer`."""
    from llmctl.data.tokenizer_train import train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "bytelevel"
    train_tokenizer([str(fixture_corpus)], out, 2000, "hf-bytelevel-bpe", quiet=True)
    return out


@pytest.fixture(scope="session")
def ray_executor():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    from llmctl.data.executors.ray import RayExecutor

    yield RayExecutor(workers=2)  # one local Ray for the session, shared by every module that asks
    ray.shutdown()
