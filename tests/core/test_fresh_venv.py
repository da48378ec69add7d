"""A torch-free install (llmctl-core + llmctl-cli only, in a fresh venv) must still run the CLI, list plugins,
and turn a torch-needing command into a one-line install hint with exit code 2 (DESIGN: torch is the user's
build). Slow (~1 min: builds two wheels, fetches pluggy/pyyaml/click/numpy/tqdm from PyPI)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fresh_helpers import clean_env, copy_package

pytestmark = pytest.mark.slow


def test_torch_free_install_runs_cli(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / "python"
    src = tmp_path / "src"
    src.mkdir()
    pkgs = [str(copy_package(n, src)) for n in ("core", "cli")]
    env = clean_env()
    res = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", *pkgs], capture_output=True, text=True, env=env, timeout=600
    )
    assert res.returncode == 0, f"pip install failed (needs PyPI):\n{res.stderr[-2000:]}"

    def llmctl(*args):
        return subprocess.run(
            [str(bindir / "llmctl"), *args], capture_output=True, text=True, env=env, timeout=120
        )

    assert subprocess.run([str(py), "-c", "import torch"], capture_output=True, env=env).returncode != 0
    res = llmctl("--help")
    assert res.returncode == 0, res.stderr
    assert {"convert", "generate", "plugins"} <= {
        line.split()[0] for line in res.stdout.split("Commands:")[1].splitlines() if line.strip()
    }
    res = llmctl("plugins")
    assert res.returncode == 0, res.stderr
    assert "core  (llmctl-core 0.1.0)" in res.stdout and "llmctl-cli" in res.stdout
    res = llmctl("doctor")  # the report works without torch and says so
    assert res.returncode == 0, res.stderr
    assert [line.split()[:3] for line in res.stdout.splitlines() if line.startswith("  torch ")] == \
        [["torch", "not", "installed"]]
    res = llmctl("convert", "native-to-hf", "--ckpt-dir", str(tmp_path), "--out-dir", str(tmp_path / "hf"))
    assert res.returncode == 2
    assert res.stderr.startswith("error: llmctl convert needs PyTorch") and res.stderr.count("\n") == 1
    assert "pip install" in res.stderr and "Traceback" not in res.stderr
    res = llmctl("generate", "--preset", "tiny", "--tokenizer", str(tmp_path), "--prompt", "hi")
    assert res.returncode == 2 and "needs PyTorch" in res.stderr
