"""End to end on CPU: a tiny model SFT'd a few hundred steps on a small fixed instruction set answers those
instructions (exact match far above the untrained model) through `llmctl chat --prompt`, with the template
it was trained with; DPO's reward accuracy rises on a toy preference set; generate and eval take --lora-dir."""

from __future__ import annotations

import pytest
import torch
from finetune_helpers import QA, dpo_data, finetune_cfg, read_jsonl, sft_data

from llmctl.core.nn.loading import load_model


def exact_match(loaded, template: str = "chatml") -> float:
    from llmctl.finetune.chat import reply
    from llmctl.finetune.templates import get_template

    t = get_template(template)
    hits = 0
    for q, a in QA:
        text = reply(loaded, t, [{"role": "user", "content": q}], None, lambda s: None, max_new_tokens=16)
        hits += text.strip() == a
    return hits / len(QA)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tok_dir, hf_base):
    from llmctl.core.train.loop import pretrain

    tmp = tmp_path_factory.mktemp("e2e")
    cfg = finetune_cfg(tmp, hf_base, sft_data(tmp, tok_dir, "--neat-pack"), "full", "train.train_iters=150",
                       "train.global_batch_size=2", "train.micro_batch_size=2", "train.lr=3e-3",
                       "train.min_lr=3e-4", "logging.interval=50")
    return pretrain(cfg).checkpoint_dir


def test_sft_answers_its_instructions(sft_run, hf_base):
    before = exact_match(load_model(hf_base, device="cpu"))
    after = exact_match(load_model(sft_run, device="cpu"))
    assert before == 0 and after >= 0.75, (before, after)


def test_chat_prompt_answers_one_turn(sft_run, cli):
    q, a = QA[0]
    code, out, err = cli("chat", "--ckpt-dir", sft_run, "--prompt", q, "--max-new-tokens", "16")
    assert code == 0, err
    assert out.strip() == a  # prompt type from the checkpoint's task.prompt_type (chatml)
    code, out, err = cli("chat", "--ckpt-dir", sft_run, "--prompt", q, "--prompt-type", "nosuch")
    assert code == 2 and "unknown prompt type 'nosuch'" in err


def test_chat_repl_history_reset_exit(sft_run):
    from click.testing import CliRunner

    from llmctl.cli.main import build_cli

    stdin = f"{QA[1][0]}\n/reset\n{QA[2][0]}\n/exit\n"
    res = CliRunner().invoke(build_cli(), ["chat", "--ckpt-dir", str(sft_run), "--max-new-tokens", "16"],
                             input=stdin, catch_exceptions=False)
    assert res.exit_code == 0
    assert QA[1][1] in res.stdout and QA[2][1] in res.stdout and "history cleared" in res.stderr


def test_dpo_reward_accuracy_rises(tmp_path, tok_dir, hf_base):
    from llmctl.core.train.loop import pretrain

    cfg = finetune_cfg(tmp_path, hf_base, dpo_data(tmp_path, tok_dir), "dpo", "train.train_iters=30",
                       "train.lr=5e-3", "task.beta=0.5", "logging.interval=1")
    log = [r for r in read_jsonl(pretrain(cfg).log_path) if r.get("rewards/accuracies") is not None]
    assert log[0]["rewards/accuracies"] == 0.0  # policy == reference at step 1: every reward is 0
    assert sum(r["rewards/accuracies"] for r in log[-5:]) / 5 == 1.0
    assert log[-1]["rewards/margins"] > log[0]["rewards/margins"]
    assert log[-1]["loss"] < log[0]["loss"]
    assert {"rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"} <= set(log[-1])


def test_generate_and_eval_take_lora_dir(tmp_path, tok_dir, hf_base, cli):
    from llmctl.core.train.loop import pretrain

    cfg = finetune_cfg(tmp_path, hf_base, sft_data(tmp_path, tok_dir), "lora", "task.lora.r=4",
                       "train.lr=2e-2", "train.train_iters=2")
    ckpt = pretrain(cfg).checkpoint_dir
    args = ["generate", "--ckpt-dir", hf_base, "--prompt", "What", "--max-new-tokens", "4", "--device", "cpu"]
    code, base_out, err = cli(*args)
    assert code == 0, err
    code, lora_out, err = cli(*args, "--lora-dir", ckpt / "iter_0000002" / "adapter")
    assert code == 0, err
    merged = load_model(hf_base, device="cpu", lora_dir=ckpt).model
    assert not torch.equal(merged.layers[0].attn.q_proj.weight, load_model(hf_base, device="cpu").model.layers[0].attn.q_proj.weight)
    code, _, err = cli(*args, "--lora-dir", tmp_path)
    assert code == 2 and "adapter_config.json" in err

    import json

    text = tmp_path / "ppl.txt"
    text.write_text("\n".join(f"{q} {a}" for q, a in QA) + "\n")
    ppl = {}
    for name, extra in (("base", []), ("lora", ["--lora-dir", str(ckpt)])):
        code, out, err = cli("eval", "run", "--task", "ppl", "--ckpt-dir", hf_base, "--data-dir", text,
                             "--out-dir", tmp_path / name, "--device", "cpu", *extra)
        assert code == 0, err
        results = json.loads((tmp_path / name / "results.json").read_text())
        ppl[name] = results
    assert ppl["lora"]["settings"].get("lora_dir") == str(ckpt)
    assert ppl["lora"]["tasks"]["ppl"]["metrics"]["ppl"] != ppl["base"]["tasks"]["ppl"]["metrics"]["ppl"]
