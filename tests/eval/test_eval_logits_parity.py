"""Logits mode against a plain transformers loop, question by question: the same official prompt, one
forward of LlamaForCausalLM, argmax over the four answer-letter logits. llmctl's path (shared few-shot prefix
in the KV cache, length-sorted right-padded batches, its own model) must pick the same letter and give the
same scores."""

from __future__ import annotations

import json

import pytest
import torch
from eval_helpers import CEVAL_DIR, CMMLU_DIR, MMLU_DIR, mmlu_prompt, predictions, read_rows

SUBJECTS = ["world_religions", "astronomy", "high_school_physics"]


def hf_letter_logits(model, tok, prompt: str, letter_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(**tok(prompt, return_tensors="pt")).logits[0, -1, letter_ids].float()


def check_records(records, hf_model, hf_tok, letter_ids, prompt_of):
    assert records
    for r in records:
        ref = hf_letter_logits(hf_model, hf_tok, prompt_of(r), letter_ids)
        torch.testing.assert_close(torch.tensor(r["scores"]), ref, atol=1e-4, rtol=1e-4)
        top2 = ref.topk(2).values
        if float(top2[0] - top2[1]) > 1e-4:  # not a numerical tie
            assert r["pred"] == "ABCD"[int(ref.argmax())], (r["subject"], r["id"])
        assert r["correct"] == (r["pred"] == r["answer"])


@pytest.mark.parametrize("shots", [0, 5])
def test_mmlu_logits_match_transformers(cli, tmp_path, hf_model_dir, hf_pair, shots):
    hf_model, hf_tok = hf_pair
    letter_ids = [hf_tok(" " + letter, add_special_tokens=False).input_ids for letter in "ABCD"]
    assert all(len(ids) == 1 for ids in letter_ids)  # " A" is one token here, as in the official script
    letter_ids = [ids[0] for ids in letter_ids]
    code, out, err = cli("eval", "run", "--task", "mmlu", "--ckpt-dir", hf_model_dir, "--data-dir", MMLU_DIR,
                         "--subjects", ",".join(SUBJECTS), "--shots", shots, "--limit", 6, "--batch-size", 4,
                         "--out-dir", tmp_path)
    assert code == 0, err
    records = predictions(tmp_path, "mmlu")
    assert len(records) == 18 and all(r["shots"] == shots for r in records)

    def prompt_of(r):
        dev = read_rows(MMLU_DIR / "dev" / f"{r['subject']}_dev.csv", header=False)[:shots]
        row = read_rows(MMLU_DIR / "test" / f"{r['subject']}_test.csv", header=False)[int(r["id"])]
        return mmlu_prompt(r["subject"], dev, row)

    check_records(records, hf_model, hf_tok, letter_ids, prompt_of)
    results = json.loads((tmp_path / "results.json").read_text())["tasks"]["mmlu"]
    assert results["metrics"]["correct"] == sum(r["correct"] for r in records)
    assert results["metrics"]["acc"] == pytest.approx(sum(r["correct"] for r in records) / 18)


def test_shots_dropped_from_the_front_when_the_context_is_short(cli, tmp_path, hf_short_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_model = AutoModelForCausalLM.from_pretrained(str(hf_short_model_dir)).float().eval()
    hf_tok = AutoTokenizer.from_pretrained(str(hf_short_model_dir))
    letter_ids = [hf_tok(" " + letter, add_special_tokens=False).input_ids[0] for letter in "ABCD"]
    code, _, err = cli("eval", "run", "--task", "mmlu", "--ckpt-dir", hf_short_model_dir, "--data-dir", MMLU_DIR,
                       "--subjects", "astronomy", "--shots", 5, "--limit", 8, "--out-dir", tmp_path)
    assert code == 0, err
    records = predictions(tmp_path, "mmlu")
    assert any(r["shots"] < 5 for r in records) and not any(r["truncated"] for r in records)

    def prompt_of(r):
        dev = read_rows(MMLU_DIR / "dev" / "astronomy_dev.csv", header=False)[:5]
        row = read_rows(MMLU_DIR / "test" / "astronomy_test.csv", header=False)[int(r["id"])]
        prompt = mmlu_prompt("astronomy", dev[5 - r["shots"]:], row)  # the earliest examples went first
        assert len(hf_tok(prompt).input_ids) <= 320
        if r["shots"] < 5:  # and one more example would not have fitted
            assert len(hf_tok(mmlu_prompt("astronomy", dev[4 - r["shots"]:], row)).input_ids) > 320
        return prompt

    check_records(records, hf_model, hf_tok, letter_ids, prompt_of)


def test_cmmlu_and_ceval_logits_match_transformers(cli, tmp_path, hf_model_dir, hf_pair):
    hf_model, hf_tok = hf_pair
    code, _, err = cli("eval", "run", "--task", "cmmlu,ceval", "--ckpt-dir", hf_model_dir,
                       "--data-dir", f"cmmlu={CMMLU_DIR}", "--data-dir", f"ceval={CEVAL_DIR}",
                       "--subjects", "agronomy,journalism,law,logic", "--shots", 2, "--limit", 3, "--out-dir", tmp_path)
    # --subjects applies to both tasks: each must find its own two, so run them separately instead
    assert code == 2 and "no subject" in err
    for task, data, subjects in (("cmmlu", CMMLU_DIR, "agronomy,journalism"), ("ceval", CEVAL_DIR, "law,logic")):
        code, _, err = cli("eval", "run", "--task", task, "--ckpt-dir", hf_model_dir, "--data-dir", data,
                           "--subjects", subjects, "--shots", 2, "--limit", 3, "--out-dir", tmp_path / task)
        assert code == 0, err

    # CMMLU's hf_causal_model.py: choice ids = tokenizer.convert_tokens_to_ids("A"); prompt from mp_utils.py
    zh = {"agronomy": "农学", "journalism": "新闻学"}

    def cmmlu_example(row, ans):
        text = "题目：" + row[1] + "".join(f"\n{letter}. {c}" for letter, c in zip("ABCD", row[2:6])) + "\n答案是："
        return text + (f"{row[6]}\n\n" if ans else "")

    def cmmlu_prompt(r):
        dev = read_rows(CMMLU_DIR / "dev" / f"{r['subject']}.csv", header=True)[:2]
        row = next(x for x in read_rows(CMMLU_DIR / "test" / f"{r['subject']}.csv", header=True) if x[0] == r["id"])
        return (f"以下是关于{zh[r['subject']]}的单项选择题，请直接给出正确答案的选项。\n\n"
                + "".join(cmmlu_example(d, True) for d in dev) + cmmlu_example(row, False))

    ids = [hf_tok.convert_tokens_to_ids(letter) for letter in "ABCD"]
    check_records(predictions(tmp_path / "cmmlu", "cmmlu"), hf_model, hf_tok, ids, cmmlu_prompt)

    # C-Eval's llama.py: logits of tokenizer.encode("A")[0]; prompt format_example / generate_few_shot_prompt
    zh = {"law": "法学", "logic": "逻辑学"}

    def ceval_example(row, ans):
        text = row[1] + "".join(f"\n{letter}. {c}" for letter, c in zip("ABCD", row[2:6])) + "\n答案："
        return text + (f"{row[6]}\n\n" if ans else "")

    def ceval_prompt(r):
        dev = read_rows(CEVAL_DIR / "dev" / f"{r['subject']}_dev.csv", header=True)[:2]
        row = next(x for x in read_rows(CEVAL_DIR / "val" / f"{r['subject']}_val.csv", header=True) if x[0] == r["id"])
        return (f"以下是中国关于{zh[r['subject']]}考试的单项选择题，请选出其中的正确答案。\n\n"
                + "".join(ceval_example(d, True) for d in dev) + ceval_example(row, False))

    ids = [hf_tok.encode(letter, add_special_tokens=False)[0] for letter in "ABCD"]
    check_records(predictions(tmp_path / "ceval", "ceval"), hf_model, hf_tok, ids, ceval_prompt)


def test_score_choices_edge_groups_match_transformers(hf_model_dir, hf_pair):
    """No shared prefix (no cache path), one prompt a prefix of another, a group of one, batch of 1 and 3."""
    from llmctl.core.nn.loading import load_model
    from llmctl.eval.scoring import score_choices

    hf_model, hf_tok = hf_pair
    model = load_model(hf_model_dir, device="cpu").model
    texts = ["Paris is the capital of", "Berlin is a city in", "Paris is the capital of France, and Rome",
             "一二三四五六七八九十", "Q"]
    prompts = [hf_tok(t).input_ids for t in texts]
    choice_ids = [5, 17, 300, 6000]
    with torch.no_grad():
        ref = [hf_model(torch.tensor([p])).logits[0, -1, choice_ids] for p in prompts]
    for groups in (None, [0, 1, 0, 2, 3], [0, 0, 0, 0, 0]):
        for batch in (1, 3):
            got = score_choices(model, prompts, choice_ids, groups=groups, batch_size=batch)
            for g, r in zip(got, ref):
                torch.testing.assert_close(torch.tensor(g), r, atol=1e-4, rtol=1e-4)


def test_mmlu_cloze_matches_transformers(cli, tmp_path, hf_model_dir, hf_pair):
    """Cloze mode: options hidden, each option's text scored after "Answer:" by a plain transformers forward,
    summed log-probs divided by the option's length in characters (lm-eval's acc_norm), argmax."""
    hf_model, hf_tok = hf_pair
    code, _, err = cli("eval", "run", "--task", "mmlu", "--ckpt-dir", hf_model_dir, "--data-dir", MMLU_DIR,
                       "--subjects", "astronomy,world_religions", "--shots", 2, "--limit", 4, "--mode", "cloze",
                       "--batch-size", 3, "--out-dir", tmp_path)
    assert code == 0, err
    records = predictions(tmp_path, "mmlu")
    assert len(records) == 8
    for r in records:
        dev = read_rows(MMLU_DIR / "dev" / f"{r['subject']}_dev.csv", header=False)[:2]
        row = read_rows(MMLU_DIR / "test" / f"{r['subject']}_test.csv", header=False)[int(r["id"])]
        header = f"The following are multiple choice questions (with answers) about  {r['subject'].replace('_', ' ')}.\n\n"
        shots = "".join(f"{d[0]}\nAnswer: {d[1 + 'ABCD'.index(d[5])]}\n\n" for d in dev)
        prompt = header + shots + f"{row[0]}\nAnswer:"
        ctx = hf_tok(prompt).input_ids
        ref = []
        for choice in row[1:5]:
            full = hf_tok(prompt + " " + choice).input_ids
            assert full[:len(ctx)] == ctx  # the option's tokens follow the prompt's unchanged
            with torch.no_grad():
                logp = torch.log_softmax(hf_model(torch.tensor([full])).logits[0].float(), -1)
            cont = full[len(ctx):]
            total = sum(float(logp[len(ctx) - 1 + k, t]) for k, t in enumerate(cont))
            ref.append(total / max(len(choice.strip()), 1))
        torch.testing.assert_close(torch.tensor(r["scores"]), torch.tensor(ref), atol=1e-3, rtol=1e-4)
        if sorted(ref)[-1] - sorted(ref)[-2] > 1e-3:
            assert r["pred"] == "ABCD"[ref.index(max(ref))], (r["subject"], r["id"])
