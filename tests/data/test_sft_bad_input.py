"""`llmctl data sft` bad input: each case is exit 2 with one line naming the record (file:line) or the key,
and no output files left behind. Own tiny data and tokenizer; no fixtures needed."""

from __future__ import annotations

import pytest
from data_helpers import write_jsonl
from sft_helpers import run_sft, tiny_chatml_tokenizer

GOOD = {"instruction": "Name a colour", "input": "", "output": "Blue."}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_chatml_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _fails(tmp_path, tok, rows, *extra, expect: str):
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    res = run_sft(inp, tok, tmp_path / "out", "--prompt-type", "chatml", *extra)
    err = res.output.strip()
    assert res.exit_code == 2, res.output
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert expect.format(inp=inp) in err, err
    assert not list(tmp_path.glob("out_packed_*")), "a failed run leaves no output files"
    return err


def test_map_keys_naming_a_missing_column(tmp_path, tok):
    _fails(tmp_path, tok, [GOOD], "--map-keys", '{"prompt": "zh_instruction"}',
           expect="{inp}:1: --map-keys prompt='zh_instruction': no such column (columns: instruction, input, output)")


def test_map_keys_naming_an_unknown_key(tmp_path, tok):
    _fails(tmp_path, tok, [GOOD], "--map-keys", '{"promt": "instruction"}',
           expect="--map-keys: 'promt' is not a key of AlpacaStyleInstructionHandler (did you mean 'prompt'?)")


def test_map_keys_that_is_not_json(tmp_path, tok):
    _fails(tmp_path, tok, [GOOD], "--map-keys", "{prompt: x}", expect="--map-keys: invalid JSON")


def test_empty_response_names_file_and_line(tmp_path, tok):
    _fails(tmp_path, tok, [GOOD, GOOD, {**GOOD, "output": "  "}],
           expect="{inp}:3: empty response ('output')")


def test_empty_assistant_turn_in_sharegpt(tmp_path, tok):
    rows = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": ""}]}]
    _fails(tmp_path, tok, rows, "--handler-name", "SharegptStyleInstructionHandler",
           expect="{inp}:1: empty response (the last assistant turn)")


def test_unknown_template_did_you_mean(tmp_path, tok):
    inp = write_jsonl(tmp_path / "in.jsonl", [GOOD])
    res = run_sft(inp, tok, tmp_path / "out", "--prompt-type", "qwen2")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "unknown prompt type 'qwen2' (did you mean" in res.output and "'qwen'" in res.output


def test_unknown_handler_did_you_mean(tmp_path, tok):
    _fails(tmp_path, tok, [GOOD], "--handler-name", "AlpacaStyleInstructionHandlr",
           expect="unknown --handler-name 'AlpacaStyleInstructionHandlr' (did you mean 'AlpacaStyleInstructionHandler'?)")


def test_pairwise_record_without_rejected(tmp_path, tok):
    rows = [{"instruction": "q", "chosen": "a", "rejected": "b"}, {"instruction": "q", "chosen": "a"}]
    _fails(tmp_path, tok, rows, "--handler-name", "AlpacaStylePairwiseHandler",
           expect="{inp}:2: pairwise record without 'rejected'")


def test_sharegpt_pairwise_without_rejected(tmp_path, tok):
    rows = [{"conversations": [{"from": "human", "value": "q"}], "chosen": "a"}]
    _fails(tmp_path, tok, rows, "--handler-name", "SharegptStylePairwiseHandler",
           expect="{inp}:1: pairwise record without 'rejected'")


def test_turns_out_of_order(tmp_path, tok):
    rows = [{"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q"},
                               {"from": "gpt", "value": "a"}]}]
    _fails(tmp_path, tok, rows, "--handler-name", "SharegptStyleInstructionHandler",
           expect="{inp}:1: message 2 has role 'user' where assistant or function is expected")


def test_invalid_json_line(tmp_path, tok):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"instruction": "q", "output": "a"}\n{"instruction": \n', encoding="utf-8")
    res = run_sft(inp, tok, tmp_path / "out", "--prompt-type", "chatml")
    assert res.exit_code == 2 and f"{inp}:2: invalid JSON" in res.output


def test_pack_without_seq_length(tmp_path, tok):
    _fails(tmp_path, tok, [GOOD], "--pack", expect="--pack/--neat-pack need --seq-length")


def test_help_has_an_example():
    from data_helpers import run_cli

    for name in ("sft", "preprocess"):
        res = run_cli(["data", name, "--help"])
        assert res.exit_code == 0 and f"llmctl data {name}" in res.output and "Example" in res.output
