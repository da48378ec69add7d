"""`llmctl bench throughput -c … --sweep …` runs each point as its own `llmctl pretrain` and writes the ranked
markdown table and the PNG chart; an invalid point is a row that says why, not a crash."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_two_point_sweep_with_an_invalid_point(cli, corpus, tmp_path):
    out = tmp_path / "sweep"
    code, stdout, err = cli("bench", "throughput", "-c", "tiny", "--set", f"data.path={corpus}",
                            "--set", "data.seq_length=32", "--set", "train.global_batch_size=4",
                            "--set", "model.max_seq_len=64", "--sweep", "micro_batch=2,3", "--steps", "3", "-o", out)
    assert code == 0, stdout + err
    table = (out / "throughput.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(("| 1 ", "| - "))]
    assert len(rows) == 2
    ok, bad = rows
    assert ok.startswith("| 1 | micro_batch=2 | 128 |") and ok.endswith("| ok |")  # TOKENS_PER_STEP = 4 x 32
    assert float(ok.split("|")[4]) > 0 and float(ok.split("|")[5].replace(",", "")) > 0  # sec/step, tokens/s
    assert bad.startswith("| - | micro_batch=3 |") and "not divisible by train.micro_batch_size 3" in bad
    assert (out / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "runs" / "micro_batch=2" / "run.log").read_text().count("elapsed time per iteration (ms)") == 3
