"""The `minilm-0.1b` preset is the tutorial's litgpt model: its shape, and its parameter count as transformers
counts the same llama (LlamaForCausalLM built on the meta device: no weights, no download): the tutorial's 108M."""

from __future__ import annotations

from llmctl.core.model_config import get_preset
from llmctl.core.train.config import load_train_config


def test_preset_has_the_tutorials_shape():
    m = get_preset("minilm-0.1b")
    assert (m.num_layers, m.hidden_size, m.num_heads, m.kv_heads, m.head_dim, m.ffn_hidden_size, m.vocab_size,
            m.max_seq_len, m.tie_embeddings) == (16, 768, 16, 8, 48, 2048, 6400, 512, True)
    cfg = load_train_config("minilm-0.1b")
    assert cfg.data.seq_length == 512 and cfg.global_batch_size == 640 and cfg.train.micro_batch_size == 80
    assert cfg.train.train_tokens == 45_000_000_000 and cfg.train_iters == 137_330  # ceil(45e9 / (640 * 512))
    assert cfg.model.padded_vocab_size == 6400  # 6400 is already a multiple of 128: no padding rows


def test_parameter_count_equals_transformers_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    m = get_preset("minilm-0.1b")
    hf = LlamaConfig(vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.ffn_hidden_size,
                     num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
                     num_key_value_heads=m.kv_heads, max_position_embeddings=m.max_seq_len,
                     tie_word_embeddings=True, attention_bias=False, mlp_bias=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(hf)
    model.tie_weights()
    n = sum(p.numel() for p in model.parameters())  # a tied weight is one parameter, counted once
    assert m.num_params() == n == 108_749_568  # the tutorial's "108M"
