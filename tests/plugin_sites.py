"""Install test-only plugin distributions from tests/plugins/ into a private --target dir: a real wheel build
and dist-info with their entry points, so discovery is the real importlib.metadata path without touching the
shared venv. Put the returned dir on PYTHONPATH (or sys.path) to load them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parent / "plugins"


def install_plugins(names: list[str], tmp: Path) -> Path:
    site = tmp / "site"
    for name in names:
        src = tmp / "src" / name
        shutil.copytree(PLUGINS / name, src)  # build in tmp: no build/ or egg-info left in the repo
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-input", "--target", str(site),
               str(src)]
        try:
            import setuptools  # noqa: F401

            cmd.insert(4, "--no-build-isolation")  # fast, offline path when the venv has setuptools
        except ImportError:
            pass
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        assert list(site.glob(f"{name}-*.dist-info")), f"{name} did not install into {site}"
    return site
