"""Fixtures for the parallel-strategy tests: a learnable corpus in Megatron's format, ONE in-process
1-process reference run shared by every comparison, the test-only plugins (fault injection, plain torch DDP,
all-reduce counting) installed as real distributions, and a memoising launcher of 2-rank torchrun runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))  # engine_helpers: torchrun launches

from parallel_helpers import launch_cached, pretrain_in_process, sets, write_pattern_corpus  # noqa: E402


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return write_pattern_corpus(tmp_path_factory.mktemp("corpus") / "pattern")


@pytest.fixture(scope="session")
def reference(corpus, tmp_path_factory):
    """The uninterrupted 1-process run (checkpoints at 5 and 10) every multi-rank run is compared with."""
    run = tmp_path_factory.mktemp("reference")
    pretrain_in_process(sets(corpus, run))
    return run


@pytest.fixture(scope="session")
def test_plugins(tmp_path_factory):
    from plugin_sites import install_plugins

    return install_plugins(["llmctl_faults", "llmctl_commcount"], tmp_path_factory.mktemp("parallel-plugins"))


@pytest.fixture(scope="session")
def dp_run(corpus, test_plugins, tmp_path_factory):
    """dp_run(name, *overrides, nproc=2, env=...) -> run dir: one torchrun run per name per session."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("dp-runs")
    return lambda name, *overrides, **kw: launch_cached(cache, root, corpus, test_plugins, name, overrides, **kw)
