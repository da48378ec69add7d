"""A long command checks what it needs before it starts: `llmctl quickstart` without matplotlib (or torch, or
llmctl-eval) exits 2 with one line naming everything to install, before stage 1 and before writing anything."""

from __future__ import annotations

import subprocess

import pytest
from fresh_helpers import borrowing_venv, clean_env

from llmctl.core import deps


def test_everything_missing_is_named_in_one_line_before_stage_1(cli, tmp_path, monkeypatch):
    real = deps.is_installed
    monkeypatch.setattr(deps, "is_installed", lambda m: m not in ("torch", "matplotlib") and real(m))
    out = tmp_path / "qs"
    code, stdout, err = cli("quickstart", "--out-dir", out)
    assert code == 2
    assert err.startswith("error: llmctl quickstart needs torch, matplotlib (not installed): "
                          "pip install 'llmctl-core[plot,torch]'"), err
    assert err.count("\n") == 1 and "[1]" not in err + stdout
    assert not out.exists()


def test_a_previous_run_is_kept_when_a_dependency_is_missing(cli, tmp_path, monkeypatch):
    """The check comes before the out-dir is replaced: a failed start does not delete the last run."""
    monkeypatch.setattr(deps, "is_installed", lambda m: m != "matplotlib")
    (tmp_path / "qs").mkdir()
    (tmp_path / "qs" / "pretrain.yaml").write_text("model: {}\n")
    code, _, err = cli("quickstart", "--out-dir", tmp_path / "qs")
    assert code == 2 and "needs matplotlib" in err and "replacing" not in err
    assert (tmp_path / "qs" / "pretrain.yaml").is_file()


@pytest.mark.slow
def test_core_data_cli_venv_without_matplotlib_stops_before_stage_1(tmp_path):
    """The issue's install: core + data + cli into a fresh venv with the user's own torch and no matplotlib
    (third-party packages borrowed from this venv, so nothing is downloaded; llmctl-eval is not installed)."""
    bindir = borrowing_venv(tmp_path, hide={"matplotlib"}, packages=["core", "data", "cli"])
    py, env = str(bindir / "python"), clean_env()
    probe = "import importlib.util as u; print(bool(u.find_spec('torch')), bool(u.find_spec('matplotlib')))"
    assert subprocess.run([py, "-c", probe], capture_output=True, text=True, env=env).stdout.split() == \
        ["True", "False"]

    out = tmp_path / "qs"
    res = subprocess.run([str(bindir / "llmctl"), "quickstart", "--out-dir", str(out)], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr == ("error: llmctl quickstart needs matplotlib, llmctl-eval (not installed): "
                          "pip install 'llmctl-core[plot]' llmctl-eval\n"), res.stderr
    assert "[1]" not in res.stdout + res.stderr and not out.exists()  # no stage started, nothing written

    res = subprocess.run([str(bindir / "llmctl"), "doctor"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = {line.split()[0]: line for line in res.stdout.splitlines() if line.startswith("  ")}
    assert "not installed" in lines["matplotlib"] and "llmctl-core[plot]" in lines["matplotlib"]
    assert "not installed" in lines["llmctl-eval"] and "0.1.0" in lines["llmctl-data"]
    assert "cuda available" in lines["torch"] and "npu available" in lines["torch"]
