"""How `llmctl` leaves: a torchrun worker whose command succeeded skips the interpreter's teardown (where
gloo's C++ threads can abort a finished process); a failed command, or a process outside torchrun, exits
as usual with its own code. Under torchrun only the logging rank (0) prints the command's output; another
rank prints only its errors, prefixed with its rank."""

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


@pytest.mark.parametrize("rank", ["0", "1"])
def test_under_torchrun_only_rank_0_prints_and_other_ranks_prefix_their_errors(monkeypatch, left, capsys, rank):
    import sys

    monkeypatch.setattr(sys, "stdout", sys.stdout)  # restored after the test: main() replaces them on rank 1
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    monkeypatch.setenv("LOCAL_RANK", rank)
    monkeypatch.setenv("RANK", rank)
    with pytest.raises(Left):
        cli_main.main(["--version"])
    assert ("llmctl" in capsys.readouterr().out) == (rank == "0")
    with pytest.raises(SystemExit) as failed:
        cli_main.main(["pretrain", "-c", "tiny", "--print-config", "--set", "model.make_vocab_size_divisible_by=0"])
    prefix = "" if rank == "0" else f"[rank {rank}] "
    captured = capsys.readouterr()
    assert failed.value.code == 2 and captured.out == ""
    assert captured.err == f"{prefix}error: model.make_vocab_size_divisible_by must be >= 1, got 0\n"
