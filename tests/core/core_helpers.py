"""Shared helpers for llmctl-core tests: tiny random HF models and a tiny tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from real_data import FIXTURES

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_FIXTURES = FIXTURES / "tokenizers"

TEXT = (
    "the quick brown fox jumps over the lazy dog. a small model learns to count: one two three four five. "
    "hello world, 你好世界. tokenizers travel with checkpoints both ways."
)


def build_tiny_tokenizer(out_dir: Path, vocab_size: int = 200) -> Path:
    """A byte-level BPE trained here with `tokenizers`, saved as an HF fast tokenizer (tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TEXT] * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def hf_config(kind: str, vocab_size: int = 320, **kw):
    """Tiny HF configs covering the llama family's variants (GQA/MHA, tied/untied, llama3 rope, qkv bias)."""
    from transformers import LlamaConfig, Qwen2Config

    base = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        initializer_range=0.2,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    variants = {
        "llama-gqa-untied-llama3rope": (
            LlamaConfig,
            dict(
                num_key_value_heads=2,
                tie_word_embeddings=False,
                rope_scaling={
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 32,
                },
            ),
        ),
        "llama-mha-tied": (
            LlamaConfig,
            dict(num_key_value_heads=4, tie_word_embeddings=True, rope_theta=500000.0),
        ),
        "qwen2-gqa-tied-bias": (
            Qwen2Config,
            dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6),
        ),
        "qwen2-mha-untied-bias": (Qwen2Config, dict(num_key_value_heads=4, tie_word_embeddings=False)),
    }
    cls, extra = variants[kind]
    return cls(**{**base, **extra, **kw})


HF_KINDS = ["llama-gqa-untied-llama3rope", "llama-mha-tied", "qwen2-gqa-tied-bias", "qwen2-mha-untied-bias"]


def make_hf_model(kind: str, seed: int = 0, **kw):
    """A random-init HF model in fp32 eval mode; qkv biases randomised too (HF initialises them to zero)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(kind, **kw)).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.2)
    return model


def pickled_globals(pt_file) -> set[str]:
    """Every `module.name` a torch.save file's pickle names (what weights_only must allow or refuse)."""
    import pickletools
    import zipfile

    with zipfile.ZipFile(pt_file) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
