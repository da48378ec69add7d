"""Fixtures every test folder uses: the in-process CLI and the real-data fixtures folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from real_data import FIXTURES, missing_reason, under_ci


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """The real-data fixtures folder (see real_data.py). Every test that reads it requests this, directly or
    through a fixture built from it: absent, the test is skipped with one reason, or fails under CI=true so
    CI can never go green by skipping."""
    if not FIXTURES.is_dir():
        if under_ci():
            pytest.fail(f"{missing_reason(FIXTURES)} (CI=true: missing fixtures are an error)", pytrace=False)
        pytest.skip(missing_reason(FIXTURES))
    return FIXTURES


def pytest_terminal_summary(terminalreporter):
    """One line saying how many tests the missing fixtures skipped and why (-ra lists each of them)."""
    reason = missing_reason(FIXTURES)
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if reason in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} tests need the real-data fixtures and were skipped: {reason} "
                                    "(README: Development)", yellow=True)


@pytest.fixture
def cli():
    """Run `llmctl ARGS` in-process through the real CLI group: (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from llmctl.cli.main import build_cli

    def run(*args: str):
        result = CliRunner().invoke(build_cli(), [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return run
