"""Templates as data: the built-ins on the plugin bus, a user templates.json, and the rendered text against
transformers' `apply_chat_template` for the Qwen2 fixture tokenizer."""

from __future__ import annotations

import json

import pytest
from sft_helpers import CONVERSATION

from llmctl.core.errors import UserError
from llmctl.data.sft.templates import (
    encode_conversation,
    get_template,
    render,
    render_text,
    stop_token_ids,
)

REQUIRED = ["qwen", "qwen_lf", "qwen3", "chatml", "llama2", "llama3", "mistral", "alpaca", "default", "empty"]
PIRATE = [{"role": "system", "content": "You are a pirate."}]


@pytest.fixture(scope="module")
def qwen2(real_fixtures):
    from llmctl.core.tokenizer import load_tokenizer

    return load_tokenizer(real_fixtures / "tokenizers" / "qwen2")


def test_builtin_templates_are_registered_on_the_bus():
    from llmctl.core.plugins import get_bus

    reg = get_bus().registry("templates")
    assert set(REQUIRED) <= set(reg)
    assert all(reg[n].plugin == "data" for n in REQUIRED)
    assert get_template("qwen").stop_words == ("<|im_end|>",) and get_template("qwen").replace_eos


def test_unknown_template_says_did_you_mean():
    with pytest.raises(UserError, match="unknown prompt type 'qwenn'.*did you mean.*qwen"):
        get_template("qwenn")


def test_user_file_adds_a_template(tmp_path):
    path = tmp_path / "templates.json"
    path.write_text(json.dumps([{"name": "mine", "format_user": {"slots": ["<U>{{content}}</U>"]},
                                 "format_assistant": {"slots": ["{{content}}", ["eos_token"]]},
                                 "format_separator": {"slots": ["|"]}, "stop_words": ["</A>"],
                                 "replace_eos": True}]))
    t = get_template("mine", path)
    assert t.source == str(path)
    conv = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    assert render(t, conv) == [("<U>q1</U>", False), ("a1", True), ("</A>", True), ("|", False),
                               ("<U>q2</U>", False), ("a2", True), ("</A>", True)]
    assert render_text(t, conv) == "<U>q1</U>a1</A>|<U>q2</U>a2</A>"
    assert get_template("qwen", path).name == "qwen"  # the bus still answers for names the file lacks


def test_bad_user_file_key_is_one_line_error(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"name": "x", "format_usr": {"slots": ["{{content}}"]}}]))
    with pytest.raises(UserError, match="unknown key 'format_usr'.*did you mean.*format_user"):
        get_template("x", path)


def test_alpaca_and_llama2_text_without_tokenizer():
    conv = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]
    assert render_text("alpaca", conv) == (get_template("alpaca").default_system
                                           + "### Instruction:\nSay hi\n\n### Response:\nhi")
    assert render_text("llama2", conv, system="S") == "[INST] <<SYS>>\nS\n<</SYS>>\n\nSay hi [/INST]hi"


@pytest.mark.parametrize("system", [None, "You are a pirate."])
@pytest.mark.parametrize("turns", [1, 2, 3])
def test_qwen_generation_prompt_equals_apply_chat_template(qwen2, system, turns):
    msgs = (PIRATE if system else []) + CONVERSATION[: 2 * turns - 1]
    ref = qwen2.hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert render_text("qwen", msgs, add_generation_prompt=True, tokenizer=qwen2) == ref
    ids, labels = encode_conversation(qwen2, "qwen", msgs, add_generation_prompt=True)
    assert ids == qwen2.hf.encode(ref)
    n_trained = sum(len(qwen2.hf.encode(m["content"])) + 1 for m in msgs if m["role"] == "assistant")
    assert sum(lab != -100 for lab in labels) == n_trained and labels[-1] == -100


@pytest.mark.parametrize("system", [None, "You are a pirate."])
def test_qwen_conversation_equals_apply_chat_template(qwen2, system):
    """MindSpeed's qwen template ends the last answer at <|im_end|> (its EOS, trained) and puts the newline
    after it into the next user turn's separator; so a whole conversation equals the chat template up to
    that final newline, and qwen_lf (which keeps the newline in the answer slot) equals it exactly."""
    msgs = (PIRATE if system else []) + CONVERSATION
    ref = qwen2.hf.apply_chat_template(msgs, tokenize=False)
    assert ref.endswith("<|im_end|>\n")
    assert render_text("qwen", msgs, tokenizer=qwen2) + "\n" == ref
    if system:  # qwen_lf's default system is Qwen2.5's, the fixture's chat template has Qwen2's
        assert render_text("qwen_lf", msgs, tokenizer=qwen2) == ref


def test_qwen_encoding_masks_everything_but_answers(qwen2):
    msgs = PIRATE + CONVERSATION
    ids, labels = encode_conversation(qwen2, "qwen", msgs)
    ref = qwen2.hf.encode(qwen2.hf.apply_chat_template(msgs, tokenize=False))
    assert ids == ref[:-1]  # all but the final "\n"
    im_end = qwen2.hf.convert_tokens_to_ids("<|im_end|>")
    trained = [i for i, lab in zip(ids, labels) if lab != -100]
    want = []
    for m in CONVERSATION[1::2]:
        want += qwen2.hf.encode(m["content"]) + [im_end]
    assert trained == want
    assert all(lab in (-100, i) for i, lab in zip(ids, labels))
    assert stop_token_ids(qwen2, "qwen") == [im_end]


def test_qwen3_adds_an_untrained_empty_think_block(qwen2):
    conv = CONVERSATION[:2]
    segs = render("qwen3", conv, tokenizer=qwen2)
    assert ("<think>\n\n</think>\n\n", False) in segs
    assert "".join(s.text for s in segs if s.trained) == conv[1]["content"] + "<|im_end|>\n"


def test_llama2_tokenizer_gets_bos_from_the_slot(real_fixtures):
    from llmctl.core.tokenizer import load_tokenizer

    tok = load_tokenizer(real_fixtures / "tokenizers" / "llama2c")
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    ids, labels = encode_conversation(tok, "llama2", conv)
    assert ids[0] == tok.hf.bos_token_id and ids[-1] == tok.hf.eos_token_id and labels[-1] == ids[-1]
    assert labels[0] == -100
