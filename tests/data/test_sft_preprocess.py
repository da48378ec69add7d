"""`llmctl data sft` on the real instruction fixtures: masking checked against transformers' chat template,
packing, megatron-core reading the files back, preference pairs, truncation, and the bus datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import write_jsonl
from sft_helpers import CONVERSATION, read_sft, run_sft, tiny_chatml_tokenizer, write_json

from llmctl.data.sft.pack import greedy_knapsack

ZH_KEYS = '{"prompt": "zh_instruction", "query": "zh_input", "response": "zh_output"}'
N = 300  # records of each fixture used (the masking tests check every one of them)


@pytest.fixture(scope="module")
def qwen2_dir(real_fixtures):
    return real_fixtures / "tokenizers" / "qwen2"


@pytest.fixture(scope="module")
def qwen2(qwen2_dir):
    from llmctl.core.tokenizer import load_tokenizer

    return load_tokenizer(qwen2_dir).hf


@pytest.fixture(scope="module")
def alpaca_records(real_fixtures):
    rows = json.loads((real_fixtures / "alpaca" / "alpaca_data.json").read_text(encoding="utf-8"))[:N]
    return [r for r in rows if r["output"].strip()]


@pytest.fixture(scope="module")
def zh_records(real_fixtures):
    rows = json.loads((real_fixtures / "alpaca_zh" / "data_v3" / "alpaca_chinese_part_0.json")
                      .read_text(encoding="utf-8"))[:N]
    return [r for r in rows if r["zh_output"].strip()]


def _check_prompt_masked(qwen2, samples, records, keys):
    """Every sample: ids = chat-template prompt (labels -100) + response + <|im_end|> (labels = ids)."""
    im_end = qwen2.convert_tokens_to_ids("<|im_end|>")
    assert len(samples) == len(records)
    for s, r in zip(samples, records):
        user = "\n".join(x for x in (r[keys[0]], r[keys[1]]) if x)
        prompt = qwen2.encode(qwen2.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                        add_generation_prompt=True))
        answer = qwen2.encode(r[keys[2]]) + [im_end]
        assert s["input_ids"].tolist() == prompt + answer
        assert s["labels"].tolist() == [-100] * len(prompt) + answer
        assert (s["attention_mask"] == 1).all()


def test_alpaca_labels_mask_exactly_the_prompt(tmp_path, qwen2_dir, qwen2, alpaca_records):
    inp = write_json(tmp_path / "alpaca.json", alpaca_records)
    res = run_sft(inp, qwen2_dir, tmp_path / "out" / "a", "--prompt-type", "qwen")
    assert res.exit_code == 0, res.output
    _check_prompt_masked(qwen2, read_sft(tmp_path / "out" / "a"), alpaca_records, ("instruction", "input", "output"))


def test_bilingual_alpaca_with_map_keys(tmp_path, qwen2_dir, qwen2, zh_records):
    """The course lab's command (preprocess alias, its spellings) on the bilingual fixture."""
    from data_helpers import run_cli

    inp = write_json(tmp_path / "zh.json", zh_records)
    res = run_cli(["data", "preprocess", "--input", inp, "--tokenizer-name-or-path", qwen2_dir,
                   "--output-prefix", tmp_path / "zh", "--workers", "1", "--log-interval", "1000",
                   "--tokenizer-type", "PretrainedFromHF", "--handler-name", "AlpacaStyleInstructionHandler",
                   "--prompt-type", "qwen", "--map-keys", ZH_KEYS])
    assert res.exit_code == 0, res.output
    assert any(r["zh_input"] for r in zh_records)  # the "\n" join is exercised
    _check_prompt_masked(qwen2, read_sft(tmp_path / "zh"), zh_records, ("zh_instruction", "zh_input", "zh_output"))
    report = json.loads((tmp_path / "zh_sft.json").read_text())
    assert report["records"] == report["samples"] == len(zh_records) and report["truncated"] == 0


def test_empty_responses_of_the_real_data_are_skipped_and_counted(tmp_path, qwen2_dir, real_fixtures):
    part = real_fixtures / "alpaca_zh" / "data_v3" / "alpaca_chinese_part_0.json"
    res = run_sft(part, qwen2_dir, tmp_path / "zh", "--prompt-type", "qwen", "--map-keys", ZH_KEYS)
    assert res.exit_code == 2 and f"{part}: item 284: empty response ('zh_output')" in res.output
    res = run_sft(part, qwen2_dir, tmp_path / "zh", "--prompt-type", "qwen", "--map-keys", ZH_KEYS, "--skip-empty")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "zh_sft.json").read_text())
    assert report["empty_skipped"] == 1 and report["empty_skipped_examples"] == [f"{part}: item 284"]
    assert report["samples"] == 999


def test_sharegpt_masks_user_and_system_turns(tmp_path, qwen2_dir, qwen2):
    rows = [{"conversations": [{"from": "system", "value": "Be brief."}]
             + [{"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]} for m in CONVERSATION]},
            {"conversations": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
             "system": "You are a pirate."}]
    inp = write_jsonl(tmp_path / "sg.jsonl", rows)
    res = run_sft(inp, qwen2_dir, tmp_path / "sg", "--handler-name", "SharegptStyleInstructionHandler",
                  "--prompt-type", "qwen")
    assert res.exit_code == 0, res.output
    im_end = qwen2.convert_tokens_to_ids("<|im_end|>")
    convs = [[{"role": "system", "content": "Be brief."}] + CONVERSATION,
             [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello."}]]
    for s, conv in zip(read_sft(tmp_path / "sg"), convs):
        ids, labels = s["input_ids"].tolist(), s["labels"].tolist()
        assert ids == qwen2.encode(qwen2.apply_chat_template(conv, tokenize=False))[:-1]
        # walk the conversation: every token up to each answer is masked, every answer token trained
        pos = 0
        for k in range(1, len(conv)):
            if conv[k]["role"] != "assistant":
                continue
            head = qwen2.encode(qwen2.apply_chat_template(conv[:k], tokenize=False, add_generation_prompt=True))
            answer = qwen2.encode(conv[k]["content"]) + [im_end]
            assert ids[: len(head)] == head and set(labels[pos : len(head)]) == {-100}
            assert labels[len(head) : len(head) + len(answer)] == answer
            pos = len(head) + len(answer)
        assert pos == len(ids)


@pytest.fixture(scope="module")
def packed_runs(tmp_path_factory, qwen2_dir, alpaca_records):
    d = tmp_path_factory.mktemp("packed")
    inp = write_json(d / "a.json", alpaca_records)
    for name, extra in (("plain", []), ("pack", ["--pack"]), ("neat", ["--neat-pack"])):
        res = run_sft(inp, qwen2_dir, d / name, "--prompt-type", "qwen", "--seq-length", "256", *extra)
        assert res.exit_code == 0, res.output
    return d


def test_pack_and_neat_pack_keep_every_sample(packed_runs, qwen2):
    plain = read_sft(packed_runs / "plain")
    bins = greedy_knapsack([len(s["input_ids"]) for s in plain], 255)
    assert len(bins) < len(plain) / 2  # packing does pack
    assert sorted(k for b in bins for k in b) == list(range(len(plain)))
    pad = qwen2.pad_token_id
    for neat in (False, True):
        rows = read_sft(packed_runs / ("neat" if neat else "pack"))
        assert len(rows) == len(bins)
        for row, members in zip(rows, bins):
            assert all(len(row[k]) == 256 for k in row)
            pos = 0
            for seg, k in enumerate(members, 1):
                n = len(plain[k]["input_ids"])
                assert (row["input_ids"][pos : pos + n] == plain[k]["input_ids"]).all()
                assert (row["labels"][pos : pos + n] == plain[k]["labels"]).all()
                assert (row["attention_mask"][pos : pos + n] == (seg if neat else 1)).all()
                pos += n
            assert pos < 256  # one token always reserved, as MindSpeed does
            assert (row["input_ids"][pos:] == pad).all() and (row["labels"][pos:] == -100).all()
            assert (row["attention_mask"][pos:] == (0 if neat else 1)).all()


def test_neat_pack_segments_alone_recover_the_samples(packed_runs):
    plain = sorted(tuple(s["input_ids"].tolist()) + (-1,) + tuple(s["labels"].tolist())
                   for s in read_sft(packed_runs / "plain"))
    got = []
    for row in read_sft(packed_runs / "neat"):
        seg = row["attention_mask"]
        assert (np.diff(seg[seg > 0]) >= 0).all() and seg[0] == 1
        for k in range(1, int(seg.max()) + 1):
            m = seg == k
            got.append(tuple(row["input_ids"][m].tolist()) + (-1,) + tuple(row["labels"][m].tolist()))
    assert sorted(got) == plain


def test_megatron_core_reads_the_files_as_int32_with_minus_100(packed_runs):
    from megatron.core.datasets.indexed_dataset import IndexedDataset as MegatronIndexed

    for name in ("plain", "pack", "neat"):
        ours = read_sft(packed_runs / name)
        for key in ("input_ids", "attention_mask", "labels"):
            ds = MegatronIndexed(str(packed_runs / f"{name}_packed_{key}_document"))
            assert ds.index.dtype == np.int32 and len(ds) == len(ours)
            for i in range(len(ds)):
                assert ds[i].dtype == np.int32 and (ds[i] == ours[i][key]).all()
            if key == "labels":
                assert any((ds[i] == -100).any() for i in range(len(ds)))


def test_dpo_fixture_pairs_share_the_masked_prompt(tmp_path, qwen2_dir, qwen2, real_fixtures):
    src = real_fixtures / "dpo" / "dpo_zh_500.jsonl"
    lines = src.read_text(encoding="utf-8").splitlines()[:40]
    inp = tmp_path / "dpo.jsonl"
    inp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = run_sft(inp, qwen2_dir, tmp_path / "dpo", "--handler-name", "SharegptStylePairwiseHandler",
                  "--prompt-type", "qwen")
    assert res.exit_code == 0, res.output
    from llmctl.core.plugins import lookup

    ds = lookup("datasets", "dpo")(tmp_path / "dpo")
    assert len(ds) == 40
    im_end = qwen2.convert_tokens_to_ids("<|im_end|>")
    for i, line in enumerate(lines):
        rec, s = json.loads(line), ds[i]
        conv = [{"role": "system" if m["from"] == "system" else "user", "content": m["value"]}
                for m in rec["conversations"]]
        prompt = qwen2.encode(qwen2.apply_chat_template(conv, tokenize=False, add_generation_prompt=True))
        for side in ("chosen", "rejected"):
            answer = qwen2.encode(rec[side]) + [im_end]
            assert s[f"{side}_input_ids"].tolist() == prompt + answer
            assert s[f"{side}_labels"].tolist() == [-100] * len(prompt) + answer


def test_truncation_cuts_the_prompt_first_and_counts(tmp_path):
    tok = tiny_chatml_tokenizer(tmp_path / "tok")
    long_prompt = "user assistant " * 40
    rows = [{"instruction": long_prompt, "output": "Blue."},  # truncated: the prompt loses its start
            {"instruction": "Hi", "output": "Red is a primary colour. " * 30},  # dropped: answer too long
            {"instruction": "Hi", "output": "Blue."}]
    inp = write_jsonl(tmp_path / "t.jsonl", rows)
    res = run_sft(inp, tok, tmp_path / "t", "--prompt-type", "chatml", "--seq-length", "32")
    assert res.exit_code == 0, res.output
    assert "1 samples were longer than 31 tokens" in res.output and f"first: {inp}:1" in res.output
    assert "1 samples were dropped" in res.output and f"{inp}:2" in res.output
    report = json.loads((tmp_path / "t_sft.json").read_text())
    assert (report["truncated"], report["dropped"], report["samples"]) == (1, 1, 2)
    samples = read_sft(tmp_path / "t")
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tok)
    first = samples[0]
    assert len(first["input_ids"]) == 31
    trained = first["input_ids"][first["labels"] != -100].tolist()
    assert trained == hf.encode("Blue.") + [hf.convert_tokens_to_ids("<|im_end|>")]
    assert hf.decode(first["input_ids"]).endswith("<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>")


def test_workers_do_not_change_the_output(tmp_path):
    tok = tiny_chatml_tokenizer(tmp_path / "tok")
    rows = [{"instruction": f"{m['content']} {i}", "output": m["content"]} for i in range(300) for m in CONVERSATION[:1]]
    inp = write_jsonl(tmp_path / "w.jsonl", rows)
    for w in ("1", "2"):
        res = run_sft(inp, tok, tmp_path / f"w{w}", "--prompt-type", "chatml", "--workers", w)
        assert res.exit_code == 0, res.output
    for key in ("input_ids", "attention_mask", "labels"):
        for ext in ("bin", "idx"):
            a = (tmp_path / f"w1_packed_{key}_document.{ext}").read_bytes()
            assert a == (tmp_path / f"w2_packed_{key}_document.{ext}").read_bytes()


def test_sft_dataset_on_the_bus_samples_whole_epochs(packed_runs):
    from llmctl.core.plugins import lookup

    build = lookup("datasets", "sft")
    base = build(packed_runs / "plain", seq_len=256)
    assert len(base) > 0 and not base.neat_packed
    assert build(str(packed_runs / "neat") + "_packed").neat_packed
    n = len(base)
    ds = build(packed_runs / "plain", seq_len=256, num_samples=2 * n + 3, seed=7)
    idx = [ds.index(i) for i in range(len(ds))]
    assert sorted(idx[:n]) == list(range(n)) and sorted(idx[n : 2 * n]) == list(range(n))
    assert idx[:n] != list(range(n)) and idx == [build(packed_runs / "plain", num_samples=2 * n + 3,
                                                         seed=7).index(i) for i in range(len(ds))]
    from llmctl.core.errors import UserError

    with pytest.raises(UserError, match="longer than seq_len 64"):
        build(packed_runs / "plain", seq_len=64)
    with pytest.raises(UserError, match="no validation split"):
        build(packed_runs / "plain", split="val")
