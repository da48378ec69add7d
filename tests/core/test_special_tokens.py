"""One EOS resolver for data and core: for a tokenizer that has both `<|endoftext|>` and `</s>` and configures
neither, the EOD `llmctl data tokenize` appends is the id generate and eval stop on."""

from __future__ import annotations

import json

from tokenizers import Tokenizer, models, pre_tokenizers

from llmctl.core.mmidx import IndexedDataset
from llmctl.core.tokenizer import load_tokenizer


def _tokenizer_with_both_ends(directory, config: dict):
    vocab = {"<unk>": 0, "</s>": 1, "<|endoftext|>": 2, "hello": 3, "world": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    directory.mkdir()
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", **config}))
    return directory


def _tokenize_eod(cli, tmp_path, tok_dir):
    corpus = tmp_path / f"{tok_dir.name}.jsonl"
    corpus.write_text(json.dumps({"text": "hello world"}) + "\n")
    code, out, err = cli("data", "tokenize", "--input", corpus, "--tokenizer", tok_dir,
                         "--output-prefix", tmp_path / tok_dir.name / "out")
    assert code == 0, err
    prefix = next((tmp_path / tok_dir.name).glob("out*_train.idx")).with_suffix("")
    return int(IndexedDataset(prefix)[0][-1])


def test_unconfigured_eos_is_the_same_for_tokenize_and_generate(cli, tmp_path):
    tok_dir = _tokenizer_with_both_ends(tmp_path / "both", {})
    eod = _tokenize_eod(cli, tmp_path, tok_dir)
    tok = load_tokenizer(tok_dir)
    assert eod == tok.eos_id == tok.stop_ids[0] == 2  # <|endoftext|> comes first in the one candidate list


def test_configured_eos_wins_everywhere(cli, tmp_path):
    tok_dir = _tokenizer_with_both_ends(tmp_path / "configured", {"eos_token": "</s>"})
    assert _tokenize_eod(cli, tmp_path, tok_dir) == load_tokenizer(tok_dir).eos_id == 1
