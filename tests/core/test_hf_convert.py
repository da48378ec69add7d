"""HF <-> native round trips against transformers itself: logits, strict key sets, tokenizer files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from core_helpers import HF_KINDS, TOKENIZER_FIXTURES, make_hf_model
from llmctl.core.nn.checkpoint import save_checkpoint
from llmctl.core.config import to_dict
from llmctl.core.nn.loading import load_model
from llmctl.core.model_config import get_preset
from llmctl.core.nn.model import Transformer
from llmctl.core.tokenizer import load_tokenizer
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")


def _tokens(vocab: int, B: int = 2, T: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("kind", HF_KINDS)
def test_hf_native_hf_round_trip(kind, tmp_path, cli, tiny_tokenizer_dir):
    hf = make_hf_model(kind)
    hf_dir, nat_dir, back_dir = tmp_path / "hf", tmp_path / "native", tmp_path / "back"
    hf.save_pretrained(hf_dir)
    load_tokenizer(tiny_tokenizer_dir).hf.save_pretrained(hf_dir)

    code, out, err = cli("convert", "hf-to-native", "--hf-dir", hf_dir, "--out-dir", nat_dir)
    assert code == 0, err
    loaded = load_model(nat_dir, device="cpu")
    assert loaded.source == "native" and loaded.tokenizer is not None
    assert loaded.config.tie_embeddings == hf.config.tie_word_embeddings
    assert (loaded.model.lm_head.weight is loaded.model.embed.weight) == hf.config.tie_word_embeddings
    x = _tokens(hf.config.vocab_size)
    with torch.no_grad():
        ref = hf(x).logits
        assert _max_diff(loaded.model(x), ref) <= 1e-4

    code, out, err = cli("convert", "native-to-hf", "--ckpt-dir", nat_dir, "--out-dir", back_dir)
    assert code == 0, err
    back, info = transformers.AutoModelForCausalLM.from_pretrained(back_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert type(back) is type(hf)
    stored = load_file(back_dir / "model.safetensors")
    assert ("lm_head.weight" in stored) != hf.config.tie_word_embeddings  # tied: stored once, as HF does
    with torch.no_grad():
        assert _max_diff(back.eval()(x).logits, ref) <= 1e-4

    # the tokenizer travelled both ways and still encodes the same
    text = "hello world, the lazy fox 你好"
    want = load_tokenizer(tiny_tokenizer_dir).encode(text)
    assert load_tokenizer(nat_dir).encode(text) == want
    assert transformers.AutoTokenizer.from_pretrained(back_dir).encode(text, add_special_tokens=False) == want
    gen_cfg = json.loads((back_dir / "generation_config.json").read_text())
    assert gen_cfg["eos_token_id"] == 2


def test_native_checkpoint_exports_to_hf(tmp_path, tiny_tokenizer_dir):
    """A model trained natively (not imported) exports to HF with identical logits; iteration selectable."""
    from llmctl.core.nn.convert import native_to_hf

    cfg = get_preset("tiny")
    cfg.vocab_size = 320
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    ck = tmp_path / "ckpt"
    save_checkpoint(
        ck, 5, {"model": model.state_dict()}, {"model": to_dict(cfg)}, tokenizer_dir=tiny_tokenizer_dir
    )
    save_checkpoint(ck, 10, {"model": Transformer(cfg).state_dict()}, {"model": to_dict(cfg)})
    native_to_hf(ck, tmp_path / "hf", iteration=5)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    x = _tokens(cfg.vocab_size)
    with torch.no_grad():
        assert _max_diff(hf(x).logits, model(x)) <= 1e-4
    # the iter dir can be given directly, and bf16 export halves the file
    native_to_hf(ck / "iter_0000005", tmp_path / "hf16", dtype="bf16")
    assert (
        load_file(tmp_path / "hf16" / "model.safetensors")["model.embed_tokens.weight"].dtype
        == torch.bfloat16
    )


@pytest.mark.parametrize("layout", ["sharded", "bin"])
def test_load_sharded_and_bin_weights(layout, tmp_path):
    hf = make_hf_model("qwen2-gqa-tied-bias")
    d = tmp_path / "hf"
    if layout == "sharded":
        hf.save_pretrained(d, max_shard_size="40KB")
        assert (d / "model.safetensors.index.json").is_file()
    else:
        hf.config.save_pretrained(d)
        torch.save(hf.state_dict(), d / "pytorch_model.bin")
    loaded = load_model(d, device="cpu")
    assert loaded.source == "hf" and loaded.tokenizer is None
    x = _tokens(hf.config.vocab_size)
    with torch.no_grad():
        assert _max_diff(loaded.model(x), hf(x).logits) <= 1e-4


def test_bf16_load_keeps_rope_fp32(tmp_path):
    hf = make_hf_model("llama-mha-tied")
    hf.save_pretrained(tmp_path)
    loaded = load_model(tmp_path, device="cpu", dtype="bf16")
    assert loaded.model.embed.weight.dtype == torch.bfloat16 and loaded.model.inv_freq.dtype == torch.float32


def test_fixture_tokenizers_travel_both_ways(tmp_path, real_fixtures):
    """Real tokenizer layouts survive hf-to-native and native-to-hf byte-for-byte and load in transformers:
    Qwen2 vocab.json + CRLF merges.txt (no tokenizer.json), and a bare Llama sentencepiece tokenizer.model."""
    from llmctl.core.nn.convert import hf_to_native, native_to_hf

    # (transformers 5 picks the tokenizer class from config.json's model_type for qwen2, so each tokenizer
    # rides with its own family, as it would in practice)
    for name, kind, files in (
        ("qwen2", "qwen2-gqa-tied-bias", ["vocab.json", "merges.txt", "tokenizer_config.json"]),
        ("llama2c", "llama-mha-tied", ["tokenizer.model"]),
    ):
        src = TOKENIZER_FIXTURES / name
        hf_dir = tmp_path / name / "hf"
        make_hf_model(
            kind, vocab_size=64, bos_token_id=None, eos_token_id=None, pad_token_id=None
        ).save_pretrained(hf_dir)
        for f in src.iterdir():
            if f.name != "SOURCE.md":
                shutil.copy(f, hf_dir / f.name)
        hf_to_native(hf_dir, tmp_path / name / "native")
        native_to_hf(tmp_path / name / "native", tmp_path / name / "back")
        for f in files:
            assert (tmp_path / name / "native" / "iter_0000000" / "tokenizer" / f).read_bytes() == (
                src / f
            ).read_bytes()
            assert (tmp_path / name / "back" / f).read_bytes() == (src / f).read_bytes()
        text = "Hello world, 你好世界"
        want = load_tokenizer(src).encode(text)
        back = transformers.AutoTokenizer.from_pretrained(tmp_path / name / "back")
        assert back.encode(text, add_special_tokens=False) == want


def test_missing_and_unexpected_weights_are_user_errors(tmp_path, cli):
    hf = make_hf_model("llama-gqa-untied-llama3rope")
    hf.save_pretrained(tmp_path / "hf")
    state = load_file(tmp_path / "hf" / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, tmp_path / "hf" / "model.safetensors")
    code, out, err = cli("convert", "hf-to-native", "--hf-dir", tmp_path / "hf", "--out-dir", tmp_path / "n")
    assert (
        code == 2
        and "missing weights model.layers.1.mlp.up_proj.weight" in err
        and len(err.splitlines()) == 1
    )
    assert not (tmp_path / "n").exists()

    state["model.layers.1.mlp.up_proj.weight"] = torch.zeros(112, 64)
    state["model.layers.0.mlp.extra.weight"] = torch.zeros(2)
    save_file(state, tmp_path / "hf" / "model.safetensors")
    code, out, err = cli("generate", "--ckpt-dir", tmp_path / "hf", "--prompt", "x")
    assert code == 2 and "unexpected weights model.layers.0.mlp.extra.weight" in err


def test_unsupported_architecture_names_config_json(tmp_path, cli):
    transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, architectures=["GPT2LMHeadModel"]
    ).save_pretrained(tmp_path / "gpt2")
    code, out, err = cli(
        "convert", "hf-to-native", "--hf-dir", tmp_path / "gpt2", "--out-dir", tmp_path / "n"
    )
    assert code == 2
    assert (
        err.startswith("error: ")
        and "config.json" in err
        and "GPT2LMHeadModel" in err
        and "Traceback" not in err
    )


def test_out_dir_guards(tmp_path, cli):
    hf = make_hf_model("llama-mha-tied")
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    code, _, err = cli("convert", "hf-to-native", "--hf-dir", tmp_path / "hf", "--out-dir", tmp_path / "busy")
    assert code == 2 and "not empty" in err and (tmp_path / "busy" / "keep.txt").is_file()
    code, _, err = cli(
        "convert", "hf-to-native", "--hf-dir", tmp_path / "hf", "--out-dir", tmp_path, "--force"
    )
    assert code == 2 and "replace the source" in err
    code, _, err = cli(
        "convert", "hf-to-native", "--hf-dir", tmp_path / "hf", "--out-dir", tmp_path / "busy", "--force"
    )
    assert code == 0 and not (tmp_path / "busy" / "keep.txt").exists()
