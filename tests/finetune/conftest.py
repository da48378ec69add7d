"""Fixtures of the finetuning tests: one CPU thread, a tiny tokenizer and tiny base models (HF and native)."""

from __future__ import annotations

import pytest
from finetune_helpers import tiny_base, tiny_tokenizer


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def hf_base(tmp_path_factory, tok_dir):
    return tiny_base(tmp_path_factory.mktemp("hf_base") / "model", tok_dir, fmt="hf")


@pytest.fixture(scope="session")
def native_base(tmp_path_factory, tok_dir):
    return tiny_base(tmp_path_factory.mktemp("native_base") / "ckpt", tok_dir, fmt="native", family="llama")
