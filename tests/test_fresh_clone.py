"""A fresh clone is green: without `../shared` beside it the tests that need the real-data fixtures are skipped
with one clear reason, the others run; under CI=true the same absence fails the run; LLMCTL_FIXTURES points a
clone at fixtures kept elsewhere. Each run is a real `python -m pytest` whose rootdir and conftest are the
clone's, over a small subset (fixture tests and self-contained ones, through the same real_fixtures fixture)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fresh_helpers import clean_env, copy_checkout

# tests/core/test_tokenizer.py: 4 tests on the real tokenizers, 2 on a tokenizer they train; test_eval_loaders.py:
# 7 on the real benchmark CSVs, 4 on CSVs they write (a second test folder, through eval_helpers).
SUBSET = ["tests/core/test_tokenizer.py", "tests/eval/test_eval_loaders.py"]
NEED_FIXTURES, SELF_CONTAINED = 11, 6


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The repository as a clone has it, in a folder with nothing beside it (no ../shared)."""
    repo = copy_checkout(tmp_path_factory.mktemp("fresh") / "llmctl")
    assert not (repo.parent / "shared").exists()
    return repo


def run_pytest(repo: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUBSET], cwd=repo,
                          capture_output=True, text=True, env=clean_env(**env), timeout=600)


def test_fresh_clone_skips_fixture_tests_with_one_reason(clone):
    res = run_pytest(clone)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    reason = f"real-data fixtures not found at {clone.parent / 'shared' / 'fixtures'}; set LLMCTL_FIXTURES"
    assert f"{SELF_CONTAINED} passed, {NEED_FIXTURES} skipped" in out, out[-4000:]
    assert f"{NEED_FIXTURES} tests need the real-data fixtures and were skipped: {reason}" in out
    assert out.count("SKIPPED [") >= 1 and all(reason in line for line in out.splitlines()
                                                if line.startswith("SKIPPED ["))
    assert "FileNotFoundError" not in out


def test_fresh_clone_under_ci_fails_with_the_same_reason(clone):
    res = run_pytest(clone, CI="true")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-4000:]
    assert f"{SELF_CONTAINED} passed, {NEED_FIXTURES} errors" in out, out[-4000:]
    assert f"real-data fixtures not found at {clone.parent / 'shared' / 'fixtures'}; set LLMCTL_FIXTURES " \
           "(CI=true: missing fixtures are an error)" in out
    assert " skipped" not in out


def test_llmctl_fixtures_points_a_clone_at_the_real_data(clone, real_fixtures):
    res = run_pytest(clone, LLMCTL_FIXTURES=str(real_fixtures), CI="true")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert f"{SELF_CONTAINED + NEED_FIXTURES} passed" in out and "skipped" not in out, out[-4000:]
