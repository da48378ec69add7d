"""The dependency probe (llmctl.core.deps) and `llmctl doctor`: what is installed, found without importing it;
one pip command per set of missing things; the report a bug report pastes."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from llmctl.core import deps
from llmctl.core.errors import UserError

ISSUE_LIST = {"torch", "matplotlib", "tensorboard", "safetensors", "sentencepiece", "transformers", "tokenizers",
              "ray", "peft"}


def test_missing_and_install_command():
    assert deps.missing(["json", "llmctl_no_such_module", "os.path"]) == ["llmctl_no_such_module"]
    assert deps.install_command(["torch", "matplotlib", "llmctl-eval", "ray", "safetensors", "peft"]) == \
        "pip install 'llmctl-core[plot,torch]' llmctl-eval 'llmctl-data[ray]' peft"
    assert deps.install_command(["tensorboard"]) == "pip install 'llmctl-core[tensorboard]'"


def test_require_raises_one_line_naming_all(monkeypatch):
    monkeypatch.setattr(deps, "is_installed", lambda m: m not in ("torch", "matplotlib"))
    try:
        deps.require("llmctl thing", ["torch", "json", "matplotlib"], ["llmctl-no-such-dist"])
    except UserError as e:
        msg = str(e)
    else:
        raise AssertionError("require did not raise")
    assert msg.startswith("llmctl thing needs torch, matplotlib, llmctl-no-such-dist (not installed): "
                          "pip install 'llmctl-core[plot,torch]' llmctl-no-such-dist (or your own torch build")
    assert "\n" not in msg
    deps.require("llmctl thing", ["json"], ["llmctl-core"])  # all present: no error


def test_probe_is_torch_free():
    """The probe imports nothing it reports on, so a torch-free data box (and quickstart's check) stays fast."""
    code = ("import sys; from llmctl.core import deps; deps.require('x', ['json']); r = deps.report(False); "
            "assert not {'torch', 'matplotlib', 'transformers'} & set(sys.modules), sorted(sys.modules); "
            "print(sum(o['installed'] for o in r['optional']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) >= 1  # this venv has torch at least


def test_doctor_lists_torch_build_and_every_optional_dependency(cli, monkeypatch):
    real = deps.is_installed
    monkeypatch.setattr(deps, "is_installed", lambda m: m != "peft" and real(m))
    code, out, err = cli("doctor")
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert ISSUE_LIST <= set(rows) and "llmctl-core" in rows
    assert torch.__version__ in rows["torch"]
    assert f"cuda available: {'yes' if torch.cuda.is_available() else 'no'}" in rows["torch"]
    assert "npu available: " in rows["torch"] and "llmctl picks: " in rows["torch"]
    assert rows["peft"].split()[1:3] == ["not", "installed"] and "pip install peft" in rows["peft"]

    code, out, _ = cli("doctor", "--json")
    rep = json.loads(out)
    by_name = {o["name"]: o for o in rep["optional"]}
    assert set(by_name) == ISSUE_LIST and by_name["peft"]["installed"] is False
    build = by_name["torch"]["build"]
    assert build["version"] == torch.__version__ and build["cuda_build"] == torch.version.cuda
    assert build["cuda_available"] == torch.cuda.is_available()
    assert rep["llmctl"]["llmctl-core"] == "0.1.0"
