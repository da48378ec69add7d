"""`llmctl plot` on a real llmctl run's logs (JSONL and its Megatron-format .log) and on Megatron/MindSpeed
text logs written here in Megatron's exact line format; images are read back with matplotlib."""

from __future__ import annotations

import pytest

from llmctl.core.plot import read_log
from llmctl.core.train import pretrain

from train_helpers import read_jsonl

mpimg = pytest.importorskip("matplotlib.image")

# megatron/training/training.py training_log() and evaluate_and_print_results(), two generations:
# MindSpeed-era (no timestamp, lr {:.3E}) and current Megatron-LM (timestamp, lr {:.6E}, grad norm).
MEGATRON_OLD = """\
------------------------ arguments ------------------------
  global_batch_size ............................... 64
  seq_length ...................................... 4096
-------------------- end of arguments ---------------------
 iteration       10/     100 | consumed samples:          640 | elapsed time per iteration (ms): 2000.0 | learning rate: 3.000E-04 | global batch size:    64 | lm loss: 9.500000E+00 | loss scale: 1.0 | grad norm: 3.210 | number of skipped iterations:   0 | number of nan iterations:   0 |
 iteration       20/     100 | consumed samples:         1280 | elapsed time per iteration (ms): 1000.0 | learning rate: 2.900E-04 | global batch size:    64 | lm loss: 8.250000E+00 | loss scale: 1.0 | grad norm: 2.100 | number of skipped iterations:   0 | number of nan iterations:   0 |
--------------------------------------------------------------------------------------------------
 validation loss at iteration 20 | lm loss value: 8.100000E+00 | lm loss PPL: 3.294468E+03 |
--------------------------------------------------------------------------------------------------
 iteration       30/     100 | consumed samples:         1920 | elapsed time per iteration (ms): 1000.0 | learning rate: 2.700E-04 | global batch size:    64 | lm loss: 7.000000E+00 | loss scale: 1.0 | grad norm: 1.500 | number of skipped iterations:   0 | number of nan iterations:   0 |
"""
MEGATRON_NEW = """\
 [2025-03-01 10:00:00.000001] iteration       10/     100 | consumed samples:          320 | elapsed time per iteration (ms): 500.0 | learning rate: 1.000000E-04 | global batch size:    32 | lm loss: 6.000000E+00 | loss scale: 1.0 | grad norm: 1.000 | number of skipped iterations:   0 | number of nan iterations:   0 |
 [2025-03-01 10:00:05.000001] iteration       20/     100 | consumed samples:          640 | elapsed time per iteration (ms): 400.0 | learning rate: 9.000000E-05 | global batch size:    32 | lm loss: 5.500000E+00 | loss scale: 1.0 | grad norm: 0.900 | number of skipped iterations:   0 | number of nan iterations:   0 |
"""


def _image_ok(path):
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0  # not blank
    assert not list(path.parent.glob(f".{path.name}*"))  # no temp file left


def test_megatron_text_logs_parse_to_the_written_values(tmp_path):
    old, new = tmp_path / "mindspeed.log", tmp_path / "megatron.log"
    old.write_text(MEGATRON_OLD)
    new.write_text(MEGATRON_NEW)
    c = read_log(old)  # seq_length found in the argument dump
    assert c.step == [10, 20, 30] and c.loss == [9.5, 8.25, 7.0] and c.lr == [3e-4, 2.9e-4, 2.7e-4]
    assert c.tokens == [640 * 4096, 1280 * 4096, 1920 * 4096] and c.step_ms == [2000.0, 1000.0, 1000.0]
    assert c.tokens_per_s[1] == 64 * 4096 / 1.0  # TOKENS_PER_STEP / sec_per_step
    assert c.val_step == [20] and c.val_loss == [8.1] and c.val_tokens == [1280 * 4096]
    d = read_log(new, seq_length=2048)
    assert d.step == [10, 20] and d.loss == [6.0, 5.5] and d.lr == [1e-4, 9e-5] and d.tokens == [320 * 2048, 640 * 2048]


def test_plot_commands_on_megatron_and_llmctl_logs(tmp_path, tiny_cfg, cli):
    result = pretrain(tiny_cfg("eval.interval=3", name="plotrun"))
    jsonl, text = result.log_path, result.log_path.with_suffix(".log")
    records = [r for r in read_jsonl(jsonl) if "lr" in r]
    c = read_log(jsonl)
    assert c.step == [r["step"] for r in records] and c.loss == [r["loss"] for r in records]
    assert c.tokens == [r["consumed_samples"] * 32 for r in records] and c.val_step == [3, 6]
    t = read_log(text)  # our own human log reads like a Megatron log
    assert t.step == c.step and t.tokens == c.tokens and t.val_step == c.val_step
    assert t.loss == pytest.approx(c.loss, rel=1e-6) and t.lr == pytest.approx(c.lr, rel=1e-6)
    assert t.val_loss == pytest.approx(c.val_loss, rel=1e-6)

    meg = tmp_path / "mindspeed.log"
    meg.write_text(MEGATRON_OLD)
    out = tmp_path / "plots" / "curves.png"
    code, stdout, stderr = cli("plot", "curves", jsonl, text, meg, "--output", out, "--smooth-window", "2",
                               "--title", "cmp")
    assert code == 0, stderr
    _image_ok(out)
    out2 = tmp_path / "plots" / "late.png"
    code, _, stderr = cli("plot", "exp-loss", meg, "--token-threshold", "4e6", "--output", out2)
    assert code == 0, stderr
    _image_ok(out2)
    code, _, stderr = cli("plot", "exp-loss", meg, "--token-threshold", "5e9", "--output", out2)
    assert code == 2 and "no steps after 5e+09 tokens" in stderr

    code, stdout, _ = cli("plot", "summary", meg, jsonl)
    assert code == 0
    row = next(line for line in stdout.splitlines() if line.startswith("mindspeed"))
    assert "1000.0" in row and f"{64 * 4096 / 1.0:,.0f}" in row  # median ms of the steady steps
    code, bench_out, _ = cli("bench", "throughput", meg, jsonl)  # the course lab's name for the same table
    assert code == 0 and bench_out == stdout


def test_plot_bad_input_is_one_line(tmp_path, cli):
    bad = tmp_path / "no_seq.log"
    bad.write_text(MEGATRON_NEW)
    code, _, stderr = cli("plot", "curves", bad, "--output", tmp_path / "x.png")
    assert code == 2 and "--seq-length" in stderr and len(stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty.log"
    empty.write_text("hello\n")
    code, _, stderr = cli("plot", "curves", empty, "--output", tmp_path / "x.png")
    assert code == 2 and "no training records" in stderr
    code, _, stderr = cli("plot", "curves", tmp_path / "missing.jsonl", "--output", tmp_path / "x.png")
    assert code == 2 and "log not found" in stderr
