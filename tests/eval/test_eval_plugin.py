"""A real third-party evaluator distribution (tests/plugins/llmctl_toy_eval) pip-installed into a private
--target dir and found through importlib.metadata entry points in a fresh process: it shows in `llmctl eval
list` with its distribution, adds its option to `eval run`, runs with the shared scoring helpers, and
LLMCTL_LOAD_PLUGINS= keeps it out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from eval_helpers import FIXTURES, REPO

TOY_SRC = REPO / "tests" / "plugins" / "llmctl_toy_eval"


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("toy_eval")
    src, site = tmp / "src", tmp / "site"
    shutil.copytree(TOY_SRC, src)  # build in tmp: no build/ or egg-info left in the repo
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-input", "--target", str(site), str(src)]
    try:
        import setuptools  # noqa: F401

        cmd.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    assert list(site.glob("llmctl_toy_eval-*.dist-info"))
    return site


def llmctl(site: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    full_env.pop("LLMCTL_LOAD_PLUGINS", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "llmctl.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=300)


def test_toy_evaluator_is_listed_and_runs(toy_site, tmp_path, hf_model_dir, hf_pair):
    res = llmctl(toy_site, "eval", "list")
    assert res.returncode == 0, res.stderr
    line = next(line for line in res.stdout.splitlines() if line.startswith("toy-copy "))
    assert "llmctl-toy-eval 0.0.1" in line and "plugin toy_eval" in line
    assert "--toy-copy-n" in llmctl(toy_site, "eval", "run", "--help").stdout

    res = llmctl(toy_site, "eval", "run", "--task", "toy-copy,mmlu", "--ckpt-dir", hf_model_dir,
                 "--data-dir", f"mmlu={FIXTURES / 'mmlu'}", "--subjects", "anatomy",
                 "--limit", 2, "--toy-copy-n", 6, "--out-dir", tmp_path)
    assert res.returncode == 0, res.stderr
    tasks = json.loads((tmp_path / "results.json").read_text())["tasks"]
    assert tasks["toy-copy"]["metrics"]["total"] == 6 and tasks["mmlu"]["metrics"]["total"] == 2

    # its scores are the next-token logits of " A".." D", as a transformers forward gives them
    hf_model, hf_tok = hf_pair
    ids = [hf_tok(" " + letter, add_special_tokens=False).input_ids[0] for letter in "ABCD"]
    rec = [json.loads(line) for line in (tmp_path / "predictions" / "toy-copy.jsonl").read_text().splitlines()][1]
    with torch.no_grad():
        ref = hf_model(**hf_tok("Repeat the letter.\nLetter: B\nAnswer:", return_tensors="pt")).logits[0, -1, ids]
    torch.testing.assert_close(torch.tensor(rec["scores"]), ref, atol=1e-4, rtol=1e-4)

    res = llmctl(toy_site, "eval", "list", env={"LLMCTL_LOAD_PLUGINS": ""})
    assert res.returncode == 0 and "toy-copy" not in res.stdout and "mmlu" in res.stdout
