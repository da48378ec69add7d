"""How `llmctl` leaves: a torchrun worker whose command succeeded skips the interpreter's teardown (where
gloo's C++ threads can abort a finished process); a failed command, or a process outside torchrun, exits
as usual with its own code."""

from __future__ import annotations

import pytest

from llmctl.cli import main as cli_main


class Left(Exception):
    pass


@pytest.fixture
def left(monkeypatch):
    codes = []

    def fake_exit(code):
        codes.append(code)
        raise Left

    monkeypatch.setattr(cli_main.os, "_exit", fake_exit)
    return codes


def test_a_finished_torchrun_worker_leaves_without_teardown(monkeypatch, left, capsys):
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(Left):
        cli_main.main(["--version"])
    assert left == [0] and "llmctl" in capsys.readouterr().out  # printed and flushed before leaving


def test_a_failed_worker_and_a_plain_process_exit_as_usual(monkeypatch, left):
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(SystemExit) as failed:
        cli_main.main(["no-such-command"])
    assert failed.value.code == 2
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    with pytest.raises(SystemExit) as done:
        cli_main.main(["--version"])
    assert done.value.code in (0, None) and left == []
