"""The dependency probe (llmctl.core.deps) and `llmctl doctor`: what is installed, found without importing it;
one pip command per set of missing things; the report a bug report pastes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from llmctl.core import deps
from llmctl.core.errors import UserError

ISSUE_LIST = {"torch", "matplotlib", "tensorboard", "safetensors", "sentencepiece", "transformers", "tokenizers",
              "ray", "peft", "wandb", "fasttext"}


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


def test_doctor_names_fasttext_by_its_numpy2_distribution(cli, monkeypatch):
    real = deps.is_installed
    monkeypatch.setattr(deps, "is_installed", lambda m: m != "fasttext" and real(m))
    code, out, err = cli("doctor")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("  fasttext "))
    assert "not installed" in row and "pip install 'llmctl-data[fasttext]'" in row
    monkeypatch.setattr(deps, "is_installed", real)
    by_name = {o["name"]: o for o in deps.report(False)["optional"]}
    assert by_name["fasttext"]["version"] == deps.version_of("fasttext-numpy2")  # module fasttext, dist -numpy2


NPU_STUB = """
import types, torch
torch.npu = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 8,
                                  get_device_name=lambda i: "Ascend910B2")
"""


def test_doctor_reports_the_npus_and_cann_it_sees(tmp_path):
    """An Ascend box as doctor sees one: CANN's install files under $ASCEND_TOOLKIT_HOME (what set_env.sh
    exports), the driver's version file, and torch_npu. No NPU here, so torch_npu is a stub distribution
    that registers torch.npu with 8 devices: this checks what doctor reads and prints, not the NPU stack
    (docs/ascend.md says what runs where)."""
    home = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    (home / "compiler").mkdir(parents=True)
    (home / "compiler" / "version.info").write_text("Version=8.0.RC3\nversion_dir=8.0.RC3\n")
    site = tmp_path / "site"
    (site / "torch_npu").mkdir(parents=True)
    (site / "torch_npu" / "__init__.py").write_text(NPU_STUB)
    meta = site / "torch_npu-2.5.1.post1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: torch-npu\nVersion: 2.5.1.post1\n")
    env = {**os.environ, "PYTHONPATH": str(site), "ASCEND_TOOLKIT_HOME": str(home)}
    res = subprocess.run([sys.executable, "-m", "llmctl.cli", "doctor"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line for line in res.stdout.splitlines() if line.startswith("  ")}
    assert "npu available: yes (8 × Ascend910B2)" in rows["torch"] and "llmctl picks: npu" in rows["torch"]
    assert rows["torch-npu"].split()[1] == "2.5.1.post1"
    assert f"8.0.RC3 at {home} ($ASCEND_TOOLKIT_HOME)" in rows["CANN"]
    res = subprocess.run([sys.executable, "-m", "llmctl.cli", "doctor", "--json"], capture_output=True, text=True,
                         env=env, timeout=120)
    rep = json.loads(res.stdout)
    assert rep["ascend"]["version"] == "8.0.RC3" and rep["ascend"]["torch_npu"] == "2.5.1.post1"
    torch_row = next(o for o in rep["optional"] if o["name"] == "torch")
    assert torch_row["build"]["npu_devices"] == 8 and torch_row["build"]["llmctl_device"] == "npu"

    # without CANN: doctor says where it looked and what to source
    env = {k: v for k, v in os.environ.items() if k not in deps.CANN_HOME_VARS}
    res = subprocess.run([sys.executable, "-m", "llmctl.cli", "doctor"], capture_output=True, text=True, env=env,
                         timeout=120)
    cann = next(line for line in res.stdout.splitlines() if line.startswith("  CANN "))
    assert "not found" in cann and "set_env.sh" in cann


def test_cann_version_from_the_toolkit_install_info(tmp_path, monkeypatch):
    """Older CANN releases state the version only in <arch>-linux/ascend_toolkit_install.info."""
    home = tmp_path / "latest"
    (home / "aarch64-linux").mkdir(parents=True)
    (home / "aarch64-linux" / "ascend_toolkit_install.info").write_text(
        "package_name=Ascend-cann-toolkit\nversion=7.0.0\ninnerversion=V100R001C15\n")
    monkeypatch.setenv("ASCEND_HOME_PATH", str(home))
    monkeypatch.delenv("ASCEND_TOOLKIT_HOME", raising=False)
    info = deps.cann_info()
    assert info["version"] == "7.0.0" and info["from"] == "$ASCEND_HOME_PATH" and info["found"]
