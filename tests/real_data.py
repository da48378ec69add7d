"""Where the real-data fixtures are, the one place tests look: $LLMCTL_FIXTURES, else `../shared/fixtures`
beside the repository root. Nothing here reads them; a test that does requests the `real_fixtures` fixture
(tests/conftest.py), which skips it when the folder is absent (and fails it under CI=true).
A uniquely named module: `from conftest import` is ambiguous across test folders."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = "LLMCTL_FIXTURES"


def fixtures_dir() -> Path:
    env = os.environ.get(ENV)
    return Path(env).expanduser().absolute() if env else REPO.parent / "shared" / "fixtures"


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_reason(path: Path) -> str:
    return f"real-data fixtures not found at {path}; set {ENV}"


FIXTURES = fixtures_dir()
