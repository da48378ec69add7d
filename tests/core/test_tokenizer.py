"""load_tokenizer on the real layouts in shared/fixtures, checked against the reference libraries themselves
(sentencepiece for tokenizer.model, `tokenizers` BPE built from vocab.json + merges.txt for Qwen2)."""

from __future__ import annotations

import json

import pytest
from core_helpers import TOKENIZER_FIXTURES
from llmctl.core.errors import UserError
from llmctl.core.tokenizer import find_tokenizer_dir, load_tokenizer

TEXTS = ["Hello world, 你好世界", "  leading spaces\nand a newline\ttab", "数字 12345 and émoji 🙂"]


def test_sentencepiece_tokenizer_model_matches_sentencepiece(real_fixtures):
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER_FIXTURES / "llama2c" / "tokenizer.model"))
    tok = load_tokenizer(TOKENIZER_FIXTURES / "llama2c")
    assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (sp.get_piece_size(), sp.bos_id(), sp.eos_id())
    assert tok.adds_bos and tok.pad_id == tok.eos_id  # no pad token: falls back to eos
    # transformers' sentencepiece conversion splits runs of spaces differently from sentencepiece itself
    # and at the start ("a  b" -> ▁a ▁▁ b vs ▁a ▁ ▁b), a known upstream difference; all else must match.
    texts = [" ".join(t.split(" ")).replace("  ", " ").lstrip() for t in TEXTS] + [
        "The quick\n\nbrown fox.",
        "def f(x):\n\treturn x",
        "ROMEO: O, she doth teach the torches to burn bright!",
    ]
    for text in texts:
        assert tok.encode(text) == sp.encode(text)
        assert tok.encode(text, add_bos=True) == [sp.bos_id(), *sp.encode(text)]
        assert tok.decode(tok.encode(text)) == sp.decode(sp.encode(text))


def test_qwen2_vocab_merges_with_crlf_matches_tokenizers_bpe(real_fixtures):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    d = TOKENIZER_FIXTURES / "qwen2"
    assert b"\r\n" in (d / "merges.txt").read_bytes()[:200]  # the fixture's CRLF quirk is still there
    ref = Tokenizer(models.BPE.from_file(str(d / "vocab.json"), str(d / "merges.txt")))
    ref.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(
                    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
                    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
                ),
                behavior="isolated",
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    ref.decoder = decoders.ByteLevel()
    tok = load_tokenizer(d)
    assert tok.encode("hello") == [14990]  # SOURCE.md's recorded ids
    assert tok.encode("Hello world, 你好世界") == [9707, 1879, 11, 220, 108386, 99489]
    for text in TEXTS:
        assert tok.encode(text) == ref.encode(text).ids
        assert tok.decode(tok.encode(text)) == text
    added = json.loads((d / "added_tokens.json").read_text())
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (None, added["<|im_end|>"], added["<|endoftext|>"])
    assert tok.vocab_size == 151646 and not tok.adds_bos
    assert tok.encode("hi", add_bos=True) == tok.encode("hi")  # no BOS to add


@pytest.mark.parametrize("name", ["minimind", "minimind_pre_v3"])
def test_tokenizer_json_matches_tokenizers_library(name, real_fixtures):
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(str(TOKENIZER_FIXTURES / name / "tokenizer.json"))
    tok = load_tokenizer(TOKENIZER_FIXTURES / name)
    cfg = json.loads((TOKENIZER_FIXTURES / name / "tokenizer_config.json").read_text())
    assert tok.eos_id == ref.token_to_id(
        cfg["eos_token"] if isinstance(cfg["eos_token"], str) else cfg["eos_token"]["content"]
    )
    for text in TEXTS:
        assert tok.encode(text) == ref.encode(text, add_special_tokens=False).ids


def test_save_round_trip_and_checkpoint_lookup(tmp_path, tiny_tokenizer_dir):
    tok = load_tokenizer(tiny_tokenizer_dir)
    tok.save(tmp_path / "a")
    again = load_tokenizer(tmp_path / "a")
    assert again.encode(TEXTS[0]) == tok.encode(TEXTS[0]) and again.stop_ids == [tok.eos_id]
    # generation_config.json next to the tokenizer adds stop ids (instruct models stop on several)
    (tmp_path / "a" / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    assert load_tokenizer(tmp_path / "a").stop_ids == [2, 0]
    # a checkpoint root resolves to iter_N/tokenizer; a file path to its directory
    from llmctl.core.nn.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "ck", 3, {"model": {}}, {}, tokenizer_dir=tiny_tokenizer_dir)
    assert find_tokenizer_dir(tmp_path / "ck") == tmp_path / "ck" / "iter_0000003" / "tokenizer"
    assert load_tokenizer(tmp_path / "ck").encode("fox") == tok.encode("fox")
    assert find_tokenizer_dir(tmp_path / "a" / "tokenizer.json") == tmp_path / "a"


def test_missing_or_broken_tokenizer_is_user_error(tmp_path):
    with pytest.raises(UserError, match="no tokenizer found"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match="not found"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot load tokenizer"):
        load_tokenizer(tmp_path)
