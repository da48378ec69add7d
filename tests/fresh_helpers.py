"""Helpers for tests that play a new user: a copy of the repository as a clone has it, a package copied out for a
wheel build, and a fresh venv that borrows this venv's third-party packages minus some (no download).
A uniquely named module: `from conftest import` is ambiguous across test folders."""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from real_data import REPO

# What a subprocess must not inherit from the test run: it would point it back at this checkout or its data.
LEAKY_ENV = ("PYTHONPATH", "VIRTUAL_ENV", "LLMCTL_LOAD_PLUGINS", "LLMCTL_FIXTURES", "CI", "PYTEST_ADDOPTS")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV and not k.startswith("PYTEST_")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def copy_checkout(dst: Path) -> Path:
    """The files a fresh clone would have: git's tracked files (plus new, not ignored ones) as they are in the
    working tree, so uncommitted edits are tested too; no .git, no build output, nothing beside it."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout of the repository")
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = REPO / rel
        if src.is_file():  # a tracked file deleted in the working tree is not copied
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def copy_package(name: str, dst: Path) -> Path:
    """Build from a copy so the wheel build leaves no build/ or egg-info behind in the repo."""
    shutil.copytree(
        REPO / "packages" / name,
        dst / name,
        ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__", "tests"),
    )
    return dst / name


def _top_levels(dist: md.Distribution) -> set[str]:
    return {Path(str(f)).parts[0] for f in (dist.files or [])} - {"__pycache__", "..", "."}


def borrowing_venv(root: Path, hide: set[str], packages: list[str]) -> Path:
    """A fresh venv (no system site) that sees this venv's third-party packages through a .pth file pointing at
    a folder of symlinks to them, minus the distributions in `hide` and every llmctl one, and then gets the
    llmctl `packages` installed for real (built from copies, --no-deps, offline). Returns its bin dir."""
    hidden = {n.lower() for n in hide}
    skip: set[str] = set()
    for dist in md.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name in hidden or name.startswith("llmctl"):
            skip |= _top_levels(dist)
    borrowed = root / "borrowed"
    borrowed.mkdir(parents=True)
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name in skip or entry.name == "__pycache__" or entry.suffix == ".pth" \
                or entry.name.startswith("__editable__"):
            continue
        (borrowed / entry.name).symlink_to(entry)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python*/site-packages")) if os.name != "nt" else venv / "Lib" / "site-packages"
    (site / "_borrowed.pth").write_text(str(borrowed) + "\n")
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    src = root / "src"
    src.mkdir()
    pkgs = [str(copy_package(n, src)) for n in packages]
    res = subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                          "--no-build-isolation", *pkgs], capture_output=True, text=True, env=clean_env(),
                         timeout=600)
    assert res.returncode == 0, f"pip install into the fresh venv failed:\n{res.stderr[-3000:]}"
    return bindir
