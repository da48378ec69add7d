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


@pytest.fixture(scope="session")
def quality_set(tmp_path_factory, real_fixtures) -> Path:
    """Labelled jsonl: real prose (label 1) against test-built spam and boilerplate (label 0)."""
    from quality_helpers import write_quality_set

    return write_quality_set(tmp_path_factory.mktemp("quality") / "labelled.jsonl", n=400)


@pytest.fixture(scope="session")
def domain_set(tmp_path_factory, real_fixtures) -> Path:
    """Labelled jsonl: domain prose / code / math."""
    from quality_helpers import write_domain_set

    return write_domain_set(tmp_path_factory.mktemp("domains") / "labelled.jsonl", n=200)


@pytest.fixture(scope="session")
def fasttext_quality(tmp_path_factory, quality_set) -> Path:
    pytest.importorskip("fasttext")
    from llmctl.data.classifiers.train import train_classifier

    out = tmp_path_factory.mktemp("clf") / "quality_ft"
    train_classifier([str(quality_set)], out, arch="fasttext", quiet=True)
    return out


@pytest.fixture(scope="session")
def fasttext_domain(tmp_path_factory, domain_set) -> Path:
    pytest.importorskip("fasttext")
    from llmctl.data.classifiers.train import train_classifier

    out = tmp_path_factory.mktemp("clf") / "domain_ft"
    train_classifier([str(domain_set)], out, arch="fasttext", label_key="domain", quiet=True)
    return out
