"""docs/labs is the single source of the labs' commands: every `bash toy` block runs here, in order, in a fresh
folder (bash, the installed `llmctl`, $FIXTURES = the real-data fixtures), and every `bash real` block's llmctl
commands must parse against the CLI and be run, as the same sub-command, by a toy block of the same page.
After each toy run the page's ```text tree blocks must exist, and the test reads what the commands wrote to
check the lab's claims: the sample's language shares, a 2-process run that resumed, the evals' counts, the
report's numbers. A run past its time limit is killed with its whole process group."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from doc_runner import (
    DOCS,
    LABS,
    blocks,
    commands,
    config_key_problems,
    lint,
    missing_tree_paths,
    resolve,
    run_toy,
    toy_blocks,
)
from labs_helpers import read_jsonl

#: Pages whose toy blocks run in one folder, in this order (ablation.md continues in lab 1's folder).
CHAINS = {"lab1": ["lab1-pretrain.md", "ablation.md"], "lab2": ["lab2-finetune.md"],
          "minilm": ["single-gpu-minilm.md"]}
#: Pages outside docs/labs whose commands are checked (and whose toy blocks, cheap ones, run).
OTHER_DOCS = ["ascend.md", "troubleshooting.md"]
TIMEOUT = 900


def lab_docs() -> list[Path]:
    return sorted(LABS.glob("*.md"))


def all_docs() -> list[Path]:
    return lab_docs() + [DOCS / name for name in OTHER_DOCS]


def block_output(out: str, doc: str, needle: str) -> str:
    """What the toy block of `doc` containing `needle` printed (between its marker and the next one)."""
    block = next(b for b in toy_blocks(LABS / doc) if needle in b.text)
    return out.split(f">>> block {block.where}\n", 1)[1].split(">>> block ", 1)[0]


def run_chain(name: str, tmp_path: Path, fixtures: Path) -> Path:
    docs = [LABS / n for n in CHAINS[name]]
    run_toy(docs, tmp_path, fixtures, TIMEOUT)
    missing = missing_tree_paths(docs, tmp_path)
    assert not missing, "paths a tree block shows but the toy run did not leave:\n" + "\n".join(missing)
    return tmp_path


# ---- every page: tagged blocks, real commands that parse and that a toy block runs ---------------------------
def test_every_lab_page_runs_in_a_chain_and_every_bash_block_is_tagged():
    chained = {n for chain in CHAINS.values() for n in chain}
    for doc in lab_docs():
        assert doc.name in chained, f"{doc.name} is not run by any chain of tests/labs/test_labs_docs.py"
        assert toy_blocks(doc), f"{doc.name} has no `bash toy` block"
    for doc in all_docs():
        for b in blocks(doc):
            if b.lang in ("bash", "sh", "shell", "console"):
                assert b.lang == "bash" and b.tag in ("toy", "real"), \
                    f"{b.where}: a shell block must be ```bash toy (run by the tests) or ```bash real"


def test_real_scale_commands_parse_and_are_run_at_toy_scale():
    problems = []
    for doc in all_docs():
        toy_paths = {tuple(resolve(argv)[0]) for b in toy_blocks(doc) for argv in commands(b)}
        for b in blocks(doc):
            if b.lang != "bash":
                continue
            for argv in commands(b):
                problems += lint(b, argv) + config_key_problems(b, argv)
                path = tuple(resolve(argv)[0])
                if b.tag == "real" and doc.parent == LABS and path not in toy_paths:
                    problems.append(f"{b.where}: `llmctl {' '.join(path)}` is shown at real scale but no toy "
                                    "block of the page runs it")
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_wrong_flag_and_key(tmp_path):
    """The lint above must be able to fail: a renamed flag, a missing command, a config key that is not."""
    doc = tmp_path / "x.md"
    doc.write_text("```bash real\nllmctl pretrain -c zen-500m --tokens-per-stepp 4 --set train.lrr=1\n"
                   "torchrun --nproc-per-node 8 -m llmctl.cli evaluate --task mmlu\n```\n")
    b = blocks(doc)[0]
    b.doc = DOCS / "x.md"  # shown relative to the repo
    found = [p for argv in commands(b) for p in lint(b, argv) + config_key_problems(b, argv)]
    assert any("no option --tokens-per-stepp" in p for p in found), found
    assert any("--set train.lrr=...`: no such config key" in p for p in found), found
    assert any("`llmctl evaluate`: no such command" in p for p in found), found


def test_ascend_page_toy_blocks_run(tmp_path, real_fixtures):
    run_toy([DOCS / "ascend.md"], tmp_path, real_fixtures, 300)


# ---- lab 1 + ablation ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_lab1_and_ablation_toy_end_to_end(tmp_path, real_fixtures):
    d = run_chain("lab1", tmp_path, real_fixtures)

    # 1. the sample: Ultra-FineWeb's zh/en folders, the lab's 20/80 byte shares, no row under the score floor
    manifest = json.loads((d / "data" / "pretrain_subset" / "manifest.json").read_text())
    assert abs(manifest["by_lang"]["zh"]["share"] - 0.2) < 0.02 and abs(manifest["by_lang"]["en"]["share"] - 0.8) < 0.02
    rows = pq.read_table(sorted((d / "data" / "pretrain_subset").glob("*.parquet"))).to_pylist()
    assert rows and min(r["score"] for r in rows) >= 0.5 and {r["lang"] for r in rows} == {"zh", "en"}

    # 2. 2 processes, stopped at 20 and resumed: one resume event, steps 1..30 once each after it
    log = read_jsonl(d / "runs" / "dp2" / "logs" / "dp2.jsonl")
    resumes = [r for r in log if r.get("event") == "resume"]
    assert [r["step"] for r in resumes] == [20]
    starts = [r["run"] for r in log if "run" in r]
    assert [s["start_step"] for s in starts] == [0, 20]
    assert all(s["environment"]["world_size"] == 2 and s["environment"]["dp_size"] == 2 for s in starts)
    train = {r["step"]: r for r in log if "lr" in r and "event" not in r}
    assert sorted(train) == list(range(2, 31, 2)) and train[30]["consumed_samples"] == 30 * 16
    assert train[30]["loss"] < train[2]["loss"] - 1.0  # it learned something in 30 steps

    # 4. the evals: 2 questions from each subject of the fixtures' MMLU and CMMLU subsets
    results = json.loads((d / "runs" / "dp2" / "eval" / "results.json").read_text())
    mmlu_subjects = len(list((real_fixtures / "mmlu" / "data" / "test").glob("*_test.csv")))
    cmmlu_subjects = len(list((real_fixtures / "cmmlu" / "data" / "test").glob("*.csv")))
    assert results["tasks"]["mmlu"]["metrics"]["total"] == 2 * mmlu_subjects
    assert results["tasks"]["cmmlu"]["metrics"]["total"] == 2 * cmmlu_subjects
    assert results["model"]["iteration"] == 30

    # 5.-7. plots, the sweep, the report
    for png in ("plots/comparison.png", "plots/exp_loss_comparison.png", "bench/throughput/throughput.png"):
        assert (d / png).read_bytes()[:4] == b"\x89PNG", png
    bench = json.loads((d / "bench" / "throughput" / "throughput.json").read_text())
    sweep = bench["rows"]  # TP 1 and TP 2, each under 2 processes (torchrun)
    assert bench["nproc_per_node"] == 2 and sorted(r["config"] for r in sweep) == ["tp=1", "tp=2"]
    assert all(r["status"] == "ok" and r["tokens_per_step"] == 1024 for r in sweep)
    md = (d / "report" / "report.md").read_text()
    assert f"| dp2 | 30 | 30,720 | {train[30]['loss']:.4f} |" in md
    for r in sweep:  # the lab's formula, as the report states it
        assert math.isclose(r["tokens_per_s"], r["tokens_per_step"] / r["sec_per_step"], rel_tol=1e-9)
        assert f"| {r['config']} | 1,024 | {r['sec_per_step']:.4f} | {r['tokens_per_s']:,.0f} |" in md
    assert "| mmlu | acc " in md and "| cmmlu | acc " in md

    # ablation.md: the lr ablation's report compares the two runs
    lr_md = (d / "report-lr" / "report.md").read_text()
    for lr in ("3e-3", "1e-2"):
        final = [r for r in read_jsonl(d / "runs" / f"lr{lr}" / "logs" / f"lr{lr}.jsonl") if "val_loss" in r][-1]
        assert f"| lr{lr} | 10 |" in lr_md and f"{final['val_loss']:.4f}" in lr_md
    assert (d / "report-lr" / "quality.png").is_file() and (d / "grid.yaml").is_file()


# ---- lab 2 -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_lab2_toy_end_to_end(tmp_path, real_fixtures):
    d = run_chain("lab2", tmp_path, real_fixtures)
    out = (d / "toy.out").read_text()

    # hf2mcore wrote 2 TP shards of a megatron-core checkpoint
    assert (d / "Qwen2.5-tiny-mcore" / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    # the alpaca-chinese fixture went through --map-keys with the qwen template: the zh columns, ChatML turns
    report = json.loads((d / "finetune_dataset" / "alpaca_sft.json").read_text())
    assert report["records"] == 1000 and report["samples"] > 900 and report["empty_skipped"] == 1
    from llmctl.core.mmidx import IndexedDataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d / "Qwen2.5-tiny")
    first = tok.decode(IndexedDataset(str(d / "finetune_dataset" / "alpaca_packed_input_ids_document"))[0])
    source = json.loads((real_fixtures / "alpaca_zh" / "data_v3" / "alpaca_chinese_part_0.json").read_text())[0]
    assert "<|im_start|>user\n" in first and "<|im_start|>assistant\n" in first
    assert source["zh_instruction"] in first and source["en_instruction"] not in first

    # full and LoRA both trained from the TP-2 checkpoint; the LoRA run trained adapters only
    full = [r for r in read_jsonl(d / "runs" / "full" / "logs" / "full.jsonl") if "lr" in r and "event" not in r]
    lora = [r for r in read_jsonl(d / "runs" / "lora" / "logs" / "lora.jsonl") if "lr" in r and "event" not in r]
    assert full[-1]["step"] == lora[-1]["step"] == 20 and full[-1]["loss"] < full[0]["loss"]
    assert "initialised from Qwen2.5-tiny-mcore (megatron-core weights" in out
    assert (d / "runs" / "lora" / "ckpt" / "iter_0000020" / "adapter" / "adapter_config.json").is_file()
    assert re.search(r"llmctl sft: [\d,]+ parameters \(16,384 trained\)", out)

    # chat answered one turn (16 new tokens of a 20-step model: noise, but an answer); C-Eval scored 2
    # questions of every fixture subject, for both models
    chat = block_output(out, "lab2-finetune.md", "llmctl chat")
    assert "read a megatron-core checkpoint from Qwen2.5-tiny-mcore" in chat
    assert [line for line in chat.splitlines() if line.strip() and not line.startswith("read ")], chat
    subjects = len(list((real_fixtures / "ceval" / "val").glob("*_val.csv")))
    for run in ("full", "lora"):
        res = json.loads((d / "runs" / run / "eval" / "results.json").read_text())
        assert res["tasks"]["ceval"]["metrics"]["total"] == 2 * subjects
    lora_eval = json.loads((d / "runs" / "lora" / "eval" / "results.json").read_text())
    assert lora_eval["settings"]["lora_dir"] == "runs/lora/ckpt"
    md = (d / "report" / "report.md").read_text()
    assert "| full | ceval |" in md and "| lora (LoRA on Qwen2.5-tiny-mcore) | ceval |" in md


# ---- the single-GPU tutorial -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_minilm_toy_end_to_end(tmp_path, real_fixtures):
    pytest.importorskip("wandb", reason="the tutorial logs to wandb (a test extra: requirements-test.txt)")
    d = run_chain("minilm", tmp_path, real_fixtures)
    run = d / "out" / "pretrain" / "minilm" / "108m"
    log = read_jsonl(run / "logs" / "108m.jsonl")
    record = next(r["run"] for r in log if "run" in r)
    cfg = record["config"]
    # the tutorial's config, converted: its schedule and budget, the --set shrink applied to the model only
    assert (cfg["train"]["lr"], cfg["train"]["min_lr"], cfg["train"]["betas"]) == (1e-3, 1e-5, [0.9, 0.95])
    assert cfg["model"]["tie_embeddings"] is True and cfg["model"]["vocab_size"] == 6400
    assert cfg["logging"]["sinks"] == ["jsonl", "wandb"] and cfg["data"]["seq_length"] == 512
    train = [r for r in log if "lr" in r and "event" not in r]
    assert train[-1]["step"] == 20 and train[-1]["tokens"] == 163_840  # the max_tokens budget, reached
    assert list((run / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    converted = (d / "minilm.yaml").read_text()
    assert "train_tokens: 45000000000" in converted and "global_batch_size: 640" in converted
    out = (d / "toy.out").read_text()
    assert block_output(out, "single-gpu-minilm.md", "llmctl generate").startswith("从前有座山，山里有座庙，庙里")
    assert (d / "report" / "report.html").is_file()
