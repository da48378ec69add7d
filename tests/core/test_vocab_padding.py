"""Megatron-style vocabulary padding does not change the model: a 69-id vocabulary padded to 128 rows (TP 1)
or 256 (TP 2) draws the same real rows and every other weight as without padding, its padded rows are zero,
and no softmax sees them: the loss, the logits generate and eval read, and generate's choices are those of
the unpadded model even with the padded logits forced high. Bad vocabulary settings are one line, exit 2."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml
from llmctl.core.model_config import ModelConfig
from llmctl.core.nn.build import build_model
from llmctl.core.nn.generate import generate

VOCAB = 69
CFG = ModelConfig(vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  ffn_hidden_size=176, max_seq_len=64)


def model(**layout) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(dataclasses.replace(CFG, **layout)).eval()


@pytest.fixture(scope="module")
def unpadded():
    return model(make_vocab_size_divisible_by=1)


@pytest.mark.parametrize("layout, rows", [({}, 128), ({"padded_vocab_size": CFG.padded_for(2)}, 256)])
def test_padding_changes_no_weight_and_no_output(unpadded, layout, rows):
    padded = model(**layout)
    assert padded.embed.weight.shape[0] == rows and unpadded.embed.weight.shape[0] == VOCAB
    state = padded.state_dict()
    for name, want in unpadded.state_dict().items():
        assert torch.equal(state[name][:want.shape[0]], want), name  # the same random stream
        assert not state[name][want.shape[0]:].any(), name  # the padding is zero
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    assert padded(tokens).shape[-1] == VOCAB
    torch.testing.assert_close(padded(tokens), unpadded(tokens), rtol=0, atol=0)
    torch.testing.assert_close(padded(tokens, tokens), unpadded(tokens, tokens), rtol=1e-6, atol=1e-6)


def force_padded_logits_high(m: torch.nn.Module) -> None:
    """The padded rows of the output layer hold 10x the first real rows (so a softmax over them would be
    ruled by them), and its output, before the model keeps the real rows, is 1e4 there."""
    with torch.no_grad():
        m.lm_head.weight[VOCAB:] = 10 * m.lm_head.weight[:m.lm_head.weight.shape[0] - VOCAB]

    def high(module, args, out):
        out = out.clone()
        out[..., VOCAB:] = 1e4
        return out

    m.lm_head.register_forward_hook(high)


@pytest.mark.parametrize("kernel", ["reference", "chunked"])
def test_loss_softmax_never_sees_the_padding(unpadded, kernel):
    from llmctl.core.nn.kernels import select_kernels

    padded = model()
    force_padded_logits_high(padded)
    ops = select_kernels("cpu", {"cross_entropy": kernel})
    padded.set_kernels(ops)
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(2))
    want = unpadded(tokens, tokens)
    padded.train()
    got = padded(tokens, tokens)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert not padded.lm_head.weight.grad[VOCAB:].any()  # never trained


@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "seed": 3}])
def test_generate_never_produces_a_padded_id(unpadded, sampling):
    padded = model()
    force_padded_logits_high(padded)
    prompts = [[5, 17, 33, 2], [44, 9]]
    got = generate(padded, prompts, max_new_tokens=12, **sampling)
    assert all(0 <= t < VOCAB for row in got for t in row)
    assert got == generate(unpadded, prompts, max_new_tokens=12, **sampling)


def test_eval_log_likelihoods_never_see_the_padding(unpadded):
    import numpy as np
    from llmctl.eval.ppl import sliding_windows, window_nll
    from llmctl.eval.scoring import score_continuations

    padded = model()
    force_padded_logits_high(padded)
    requests = [([5, 17, 33], [2, 8]), ([44, 9], [60])]
    assert score_continuations(padded, requests, batch_size=2) == pytest.approx(
        score_continuations(unpadded, requests, batch_size=2), abs=1e-5)
    stream = np.random.default_rng(0).integers(0, VOCAB, 40)
    windows = sliding_windows(len(stream), 20, 10)
    assert window_nll(padded, stream, windows, 2) == pytest.approx(window_nll(unpadded, stream, windows, 2),
                                                                   rel=1e-6)


# ---- bad input --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", *(f"w{i}" for i in range(3, VOCAB))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<pad>").save_pretrained(out)
    return out


@pytest.mark.parametrize("sets, message", [
    (["model.make_vocab_size_divisible_by=0"], "model.make_vocab_size_divisible_by must be >= 1, got 0"),
    (["model.make_vocab_size_divisible_by=-128"], "model.make_vocab_size_divisible_by must be >= 1, got -128"),
    (["model.vocab_size=50"], "config: model.vocab_size 50 is smaller than the tokenizer's 69"),
    (["model.padded_vocab_size=100"], "config: model.padded_vocab_size 100 is derived, not set"),
])
def test_bad_vocabulary_settings_are_one_line(cli, word_tokenizer, sets, message):
    args = ["pretrain", "-c", "tiny", "--print-config", "--set", f"data.tokenizer={word_tokenizer}"]
    code, out, err = cli(*args, *[a for s in sets for a in ("--set", s)])
    assert code == 2 and out == "" and err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_print_config_shows_the_vocab_and_its_padding(cli, word_tokenizer):
    code, out, _ = cli("pretrain", "-c", "tiny", "--print-config", "--tp", "2", "--set",
                       f"data.tokenizer={word_tokenizer}")
    model_section = yaml.safe_load(out)["model"]
    assert code == 0 and (model_section["vocab_size"], model_section["padded_vocab_size"]) == (VOCAB, 256)
    assert model_section["make_vocab_size_divisible_by"] == 128


@pytest.mark.parametrize("vocab, padded, message", [
    (60, 128, "model.vocab_size 60 (padded_vocab_size 128) cannot hold its tokenizer's 69 ids"),
    (VOCAB, 64, "model.padded_vocab_size 64 cannot hold model.vocab_size 69"),
])
def test_a_checkpoint_too_small_for_its_tokenizer_is_one_line(cli, word_tokenizer, tmp_path, vocab, padded,
                                                              message):
    from llmctl.core.config import to_dict
    from llmctl.core.nn.checkpoint import save_checkpoint

    cfg = dataclasses.replace(CFG, vocab_size=vocab, padded_vocab_size=padded)
    state = model().state_dict()
    save_checkpoint(tmp_path / "ckpt", 1, {"model": state}, {"model": to_dict(cfg)}, tokenizer_dir=word_tokenizer)
    code, out, err = cli("generate", "--ckpt-dir", tmp_path / "ckpt", "--prompt", "w3 w4", "--max-new-tokens", "2")
    assert code == 2 and out == "" and message in err and err.count("\n") == 1, err


def test_rows_an_hf_checkpoint_brings_are_the_models_own(tmp_path, tiny_tokenizer_dir):
    """As Qwen2.5's 151936 rows for 151665 ids: an HF model with more rows (320) than its tokenizer has ids
    (259) keeps them all, in the softmax, so its logits are transformers' on every row; llmctl's own
    padding (to 384 rows, for its matrix shapes) stays out; the export has the HF model's 320 again."""
    from core_helpers import make_hf_model
    from llmctl.core.nn.convert import hf_to_native, native_to_hf
    from llmctl.core.nn.loading import load_model
    from llmctl.core.tokenizer import load_tokenizer

    hf = make_hf_model("qwen2-gqa-tied-bias")
    hf.save_pretrained(tmp_path / "hf")
    load_tokenizer(tiny_tokenizer_dir).hf.save_pretrained(tmp_path / "hf")
    hf_to_native(tmp_path / "hf", tmp_path / "native")
    loaded = load_model(tmp_path / "native", device="cpu")
    assert (loaded.config.vocab_size, loaded.model.embed.weight.shape[0], loaded.tokenizer.vocab_size) == (320, 384, 259)
    tokens = torch.randint(0, 259, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens), hf(tokens).logits, rtol=1e-4, atol=1e-4)
    native_to_hf(tmp_path / "native", tmp_path / "back")
    back = yaml.safe_load((tmp_path / "back" / "config.json").read_text())
    assert back["vocab_size"] == 320
