"""`llmctl eval run/list/compare` end to end: generate mode against transformers' greedy generate, native
checkpoints, results.json / log / predictions, compare, and bad input (exit 2 or documented skips)."""

from __future__ import annotations

import json

import pytest
import torch
from eval_helpers import MMLU_DIR, mmlu_prompt, predictions, read_rows

from llmctl.eval.scoring import extract_letter


def run_mmlu(cli, model_dir, out_dir, *extra):
    return cli("eval", "run", "--task", "mmlu", "--ckpt-dir", model_dir, "--data-dir", MMLU_DIR,
               "--out-dir", out_dir, *extra)


def test_generate_mode_matches_transformers_greedy(cli, tmp_path, hf_model_dir, hf_pair):
    hf_model, hf_tok = hf_pair
    code, _, err = run_mmlu(cli, hf_model_dir, tmp_path, "--mode", "generate", "--max-new-tokens", 6, "--shots", 1,
                            "--limit", 3, "--subjects", "world_religions,anatomy", "--batch-size", 2)
    assert code == 0, err
    records = predictions(tmp_path, "mmlu")
    assert len(records) == 6
    for r in records:
        dev = read_rows(MMLU_DIR / "dev" / f"{r['subject']}_dev.csv", header=False)[:1]
        row = read_rows(MMLU_DIR / "test" / f"{r['subject']}_test.csv", header=False)[int(r["id"])]
        inputs = hf_tok(mmlu_prompt(r["subject"], dev, row), return_tensors="pt")
        with torch.no_grad():
            out = hf_model.generate(**inputs, max_new_tokens=6, do_sample=False,
                                    pad_token_id=hf_tok.pad_token_id or hf_tok.eos_token_id)
        text = hf_tok.decode(out[0, inputs.input_ids.shape[1]:], skip_special_tokens=True)
        assert r["output"] == text
        assert r["pred"] == extract_letter(text) and r["correct"] == (r["pred"] == r["answer"])
    metrics = json.loads((tmp_path / "results.json").read_text())["tasks"]["mmlu"]["metrics"]
    assert metrics["no_answer"] == sum(r["pred"] is None for r in records)


def test_native_checkpoint_scores_like_its_hf_export(cli, tmp_path, hf_model_dir):
    from llmctl.core.nn.checkpoint import save_checkpoint
    from llmctl.core.config import to_dict
    from llmctl.core.nn.loading import read_hf_state

    cfg, state = read_hf_state(hf_model_dir)
    save_checkpoint(tmp_path / "ckpt", 3, {"model": state}, {"model": to_dict(cfg)}, tokenizer_dir=hf_model_dir)
    args = ("--subjects", "astronomy", "--limit", 4, "--shots", 2)
    assert run_mmlu(cli, hf_model_dir, tmp_path / "a", *args)[0] == 0
    code, _, err = run_mmlu(cli, tmp_path / "ckpt", tmp_path / "b", *args)
    assert code == 0, err
    for ra, rb in zip(predictions(tmp_path / "a", "mmlu"), predictions(tmp_path / "b", "mmlu")):
        assert ra["pred"] == rb["pred"]
        torch.testing.assert_close(torch.tensor(ra["scores"]), torch.tensor(rb["scores"]), atol=1e-5, rtol=1e-5)
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert b["model"]["source"] == "native" and b["model"]["iteration"] == 3 and len(b["model"]["weights_sha256"]) == 64


def test_results_log_and_compare(cli, tmp_path, hf_model_dir, hf_short_model_dir):
    args = ("--subjects", "astronomy,world_religions,high_school_physics", "--limit", 5, "--shots", 0)
    assert run_mmlu(cli, hf_model_dir, tmp_path / "a", *args)[0] == 0
    assert run_mmlu(cli, hf_short_model_dir, tmp_path / "b", *args)[0] == 0
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    for key in ("llmctl_version", "timestamp", "model", "settings", "tasks"):
        assert key in a
    assert a["settings"]["mode"] == "logits" and a["settings"]["shots"] == 0 and a["settings"]["limit"] == 5
    task = a["tasks"]["mmlu"]
    assert set(task["subjects"]) == {"astronomy", "world_religions", "high_school_physics"}
    assert set(task["categories"]) == {"STEM", "humanities"}  # astronomy+physics, world_religions
    assert task["categories"]["STEM"]["total"] == 10 and task["metrics"]["total"] == 15
    assert task["data_sha256"] == b["tasks"]["mmlu"]["data_sha256"]  # same CSVs
    assert a["model"]["weights_sha256"] != b["model"]["weights_sha256"]  # different weights
    logs = list((tmp_path / "a" / "logs").glob("eval_*/mmlu.log"))
    assert len(logs) == 1
    log = logs[0].read_text()
    assert "world_religions" in log and "STEM" in log and "overall: acc=" in log

    code, out, err = cli("eval", "compare", tmp_path / "a" / "results.json", tmp_path / "b")
    assert code == 0, err
    assert "[mmlu]" in out and "category:STEM" in out and "subject:astronomy" in out
    acc_line = next(line for line in out.splitlines() if line.startswith("acc "))
    va, vb, delta = (float(x) for x in acc_line.split()[1:4])
    assert (va, vb) == (pytest.approx(task["metrics"]["acc"], abs=1e-4),
                        pytest.approx(b["tasks"]["mmlu"]["metrics"]["acc"], abs=1e-4))
    assert delta == pytest.approx(vb - va, abs=2e-4)


def test_list_shows_builtins(cli):
    code, out, _ = cli("eval", "list")
    assert code == 0
    for name in ("mmlu", "cmmlu", "ceval", "ppl"):
        assert any(line.startswith(name + " ") and "llmctl-eval" in line for line in out.splitlines())


def _mmlu_layout(root, subjects: dict[str, str], dev: bool = True):
    for split in ("test", "dev") if dev else ("test",):
        (root / split).mkdir(parents=True, exist_ok=True)
        for subject, text in subjects.items():
            (root / split / f"{subject}_{split}.csv").write_text(text, encoding="utf-8")
    return root


def test_bad_input_exits_2_with_file_and_line(cli, tmp_path, hf_model_dir):
    good = "What is 1+1?,1,2,3,4,B\nWhat is 2+2?,2,3,4,5,C\n"
    data = _mmlu_layout(tmp_path / "cols", {"math": good + "short row,1,2,3,C\n"})
    code, _, err = run_mmlu(cli, hf_model_dir, tmp_path / "o", "--data-dir", data)
    assert code == 2 and "math_test.csv:3: expected 6 columns" in err and "Traceback" not in err

    data = _mmlu_layout(tmp_path / "ans", {"math": good + "q,1,2,3,4,F\n"})
    code, _, err = run_mmlu(cli, hf_model_dir, tmp_path / "o", "--data-dir", data)
    assert code == 2 and "math_test.csv:3: answer 'F' is not one of A, B, C, D" in err

    data = _mmlu_layout(tmp_path / "nodev", {"math": good}, dev=False)
    code, _, err = run_mmlu(cli, hf_model_dir, tmp_path / "o", "--data-dir", data, "--shots", 5)
    assert code == 2 and "no 'dev/' directory" in err
    assert run_mmlu(cli, hf_model_dir, tmp_path / "o", "--data-dir", data, "--shots", 0)[0] == 0  # no dev needed

    code, _, err = cli("eval", "run", "--task", "mmlu", "--ckpt-dir", hf_model_dir, "--data-dir", tmp_path / "missing",
                       "--out-dir", tmp_path / "o")
    assert code == 2 and "data directory not found" in err
    code, _, err = cli("eval", "run", "--task", "mmlux", "--ckpt-dir", hf_model_dir, "--out-dir", tmp_path / "o")
    assert code == 2 and "did you mean 'mmlu'" in err
    code, _, err = run_mmlu(cli, hf_model_dir, tmp_path / "o", "--lora-dir", tmp_path)
    assert code == 2 and "no adapter_config.json" in err  # tests/finetune runs eval with a real adapter
    code, _, err = run_mmlu(cli, hf_model_dir, tmp_path / "o", "--batch-size", "lots")
    assert code == 2 and "--batch-size" in err
    code, _, err = run_mmlu(cli, hf_model_dir, tmp_path / "o", "--split", "dev", "--shots", 5)
    assert code == 2 and "--split dev is where the few-shot examples come from" in err


def test_empty_subject_is_skipped_and_reported(cli, tmp_path, hf_model_dir):
    data = _mmlu_layout(tmp_path / "d", {"math": "What is 1+1?,1,2,3,4,B\n", "empty": ""})
    code, out, err = run_mmlu(cli, hf_model_dir, tmp_path / "o", "--data-dir", data, "--shots", 1)
    assert code == 0, err
    task = json.loads((tmp_path / "o" / "results.json").read_text())["tasks"]["mmlu"]
    assert task["info"]["skipped_subjects"] == {"empty": "no questions"}
    assert list(task["subjects"]) == ["math"] and task["metrics"]["total"] == 1
    assert task["categories"] == {"unmapped": task["categories"]["unmapped"]}  # not an official subject
    assert "skipped_subjects: {'empty': 'no questions'}" in next((tmp_path / "o" / "logs").glob("*/mmlu.log")).read_text()


def test_list_and_help_work_without_torch(tmp_path):
    """`import torch` made to fail: listing and help still work, a run says how to install torch (exit 2)."""
    import subprocess
    import sys

    script = ("import sys; sys.modules['torch'] = None\n"
              "from llmctl.cli.main import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    sys.exit(e.code)\n")
    run = lambda *args: subprocess.run([sys.executable, "-c", script, *map(str, args)],  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    assert run("eval", "list").returncode == 0
    res = run("eval", "run", "--help")
    assert res.returncode == 0 and "--ppl-window" in res.stdout
    res = run("eval", "run", "--task", "mmlu", "--ckpt-dir", tmp_path, "--out-dir", tmp_path)
    assert res.returncode == 2 and "needs PyTorch" in res.stderr
