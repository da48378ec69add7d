"""Fixtures every test folder uses: the in-process CLI."""

from __future__ import annotations

import pytest


@pytest.fixture
def cli():
    """Run `llmctl ARGS` in-process through the real CLI group: (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from llmctl.cli.main import build_cli

    def run(*args: str):
        result = CliRunner().invoke(build_cli(), [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return run
