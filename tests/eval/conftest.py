"""Fixtures for llmctl-eval tests; the helpers they use live in eval_helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_helpers import build_hf_model


@pytest.fixture(scope="session")
def hf_model_dir(tmp_path_factory, real_fixtures) -> Path:
    """Needs the real minimind tokenizer, so every test using the model needs the real-data fixtures."""
    return build_hf_model(tmp_path_factory.mktemp("hf_tiny"))


@pytest.fixture(scope="session")
def hf_short_model_dir(tmp_path_factory, real_fixtures) -> Path:
    """Same family with only 320 positions: 5-shot MMLU prompts no longer fit and shots get dropped."""
    return build_hf_model(tmp_path_factory.mktemp("hf_short"), max_positions=320, seed=1)


@pytest.fixture(scope="session")
def hf_pair(hf_model_dir):
    """(transformers model, transformers tokenizer) loaded straight from the exported dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(hf_model_dir)).float().eval(), \
        AutoTokenizer.from_pretrained(str(hf_model_dir))


