"""End to end through the real data path (`llmctl data tokenize` of real text, llmctl-data's "gpt" dataset via
the plugin bus) and real processes: SIGKILL in the middle of training and in the middle of a checkpoint save,
then resume, gives exactly the per-step losses of an uninterrupted run (CPU, fp32, one thread); the pointer
never names an incomplete checkpoint; `--auto-restart` brings a crashed run back to the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from real_data import FIXTURES

from llmctl.core.nn.checkpoint import latest_iteration, list_iterations, load_checkpoint

TOKENIZER = FIXTURES / "tokenizers" / "minimind"
SHAKESPEARE = FIXTURES / "text_corpus" / "tinyshakespeare" / "input.txt"
ITERS = 24

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, real_fixtures):
    """Shakespeare paragraphs as JSONL documents, tokenized by `llmctl data tokenize` with a real tokenizer."""
    from click.testing import CliRunner

    from llmctl.cli.main import build_cli

    root = tmp_path_factory.mktemp("corpus")
    paragraphs = [p.strip() for p in SHAKESPEARE.read_text(encoding="utf-8")[:120_000].split("\n\n") if p.strip()]
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for p in paragraphs:
            f.write(json.dumps({"text": p}) + "\n")
    result = CliRunner().invoke(build_cli(), ["data", "tokenize", "--input", str(root / "corpus.jsonl"),
                                              "--tokenizer", str(TOKENIZER), "--output-prefix", str(root / "shakes")])
    assert result.exit_code == 0, result.output
    return root / "shakes"


def _sets(corpus: Path, run: Path) -> list[str]:
    return [f"data.path={corpus}", f"data.tokenizer={TOKENIZER}", "data.seq_length=32",
            f"train.train_iters={ITERS}", "train.global_batch_size=4", "train.micro_batch_size=2",
            "train.warmup_iters=4", "eval.interval=0", "eval.iters=1", f"checkpoint.dir={run / 'ckpt'}",
            "checkpoint.interval=4", "checkpoint.keep=null", f"logging.dir={run / 'logs'}", "logging.name=run",
            "logging.interval=1", "model.max_seq_len=64"]


def _args(corpus: Path, run: Path) -> list[str]:
    return ["-c", "tiny", *[a for s in _sets(corpus, run) for a in ("--set", s)]]


def _env(site: Path, faults: str = "") -> dict[str, str]:
    """The children's environment: one thread, the fault-injection plugin on the path, `faults` for it."""
    env = {k: v for k, v in os.environ.items() if k not in ("LLMCTL_FAULTS", "LLMCTL_LOAD_PLUGINS")}
    path = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LLMCTL_PROGRESS": "0",
            "PYTHONPATH": path, "LLMCTL_FAULTS": faults}


def _llmctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmctl.cli", "pretrain", *args]


def _losses(run: Path) -> list[tuple[int, float]]:
    path = run / "logs" / "run.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [(r["step"], r["loss"]) for r in records if "lr" in r and "event" not in r]


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}: {proc.stdout.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def _assert_pointer_complete(ckpt: Path) -> int:
    it = latest_iteration(ckpt)
    state, config, it_dir = load_checkpoint(ckpt)  # loads, weights_only=True
    assert state["iteration"] == it and config["model"]["vocab_size"] >= 6400
    assert (it_dir / "tokenizer" / "tokenizer.json").is_file()
    return it


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The uninterrupted run, in this process (one thread, like the children) to save a process start."""
    from llmctl.core.train import load_train_config, pretrain

    run = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(load_train_config("tiny", _sets(corpus, run)), echo=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    losses = _losses(run)
    assert [s for s, _ in losses] == list(range(1, ITERS + 1))
    assert losses[-1][1] < losses[0][1] - 1.0  # it learns the text
    return run, dict(losses)


def _assert_same_run(run: Path, reference) -> None:
    ref_run, ref_losses = reference
    seen = _losses(run)
    assert {s for s, _ in seen} == set(range(1, ITERS + 1))
    mismatched = [(s, loss, ref_losses[s]) for s, loss in seen if loss != ref_losses[s]]
    assert not mismatched, f"(step, got, uninterrupted): {mismatched[:5]}"  # replayed steps included
    got, _, _ = load_checkpoint(run / "ckpt")
    want, _, _ = load_checkpoint(ref_run / "ckpt")
    assert got["iteration"] == want["iteration"] == ITERS
    for name, tensor in want["model"].items():
        assert torch.equal(got["model"][name], tensor), name


def test_sigkill_mid_training_and_mid_save_then_resume_is_exact(corpus, reference, tmp_path, engine_plugins):
    run = tmp_path / "killed"
    ckpt = run / "ckpt"
    args = _args(corpus, run)

    # 1. SIGKILL while training, somewhere after the checkpoint at step 8.
    proc = subprocess.Popen(_llmctl(*args), env=_env(engine_plugins), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _kill_when(proc, lambda: any(s >= 7 for s, _ in _losses(run)), "step 7")
    first = _assert_pointer_complete(ckpt)
    assert 4 <= first <= ITERS - 12 and first % 4 == 0

    # 2. Resume, and SIGKILL in the middle of writing the checkpoint of step first+8.
    hang_at = first + 8
    proc = subprocess.Popen(_llmctl(*args, "--resume", "auto"), env=_env(engine_plugins, f"hang_at_save={hang_at}"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    partial = f".iter_{hang_at:07d}.tmp/mp_rank_00/model_optim_rng.pt"  # every shard written, not published
    _kill_when(proc, lambda: any(ckpt.glob(partial)), f"the save of iteration {hang_at}")
    assert _assert_pointer_complete(ckpt) == first + 4  # the pointer still names the last complete save
    assert hang_at not in list_iterations(ckpt) and any(ckpt.glob(f".iter_{hang_at:07d}.tmp"))

    # 3. Resume to the end.
    done = subprocess.run(_llmctl(*args, "--resume", "auto"), env=_env(engine_plugins), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not any(ckpt.glob(".iter_*.tmp"))  # the dead save's temp dir was cleaned up
    _assert_same_run(run, reference)
    resumes = [json.loads(line) for line in (run / "logs" / "run.jsonl").read_text().splitlines()
               if '"event": "resume"' in line]
    assert [r["step"] for r in resumes] == [first, first + 4]


def test_auto_restart_after_a_crash(corpus, reference, tmp_path, engine_plugins):
    run = tmp_path / "supervised"
    done = subprocess.run(_llmctl(*_args(corpus, run), "--auto-restart", "2"),
                          env=_env(engine_plugins, "kill_at_step=10"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in (run / "logs" / "run.jsonl").read_text().splitlines()
              if '"event"' in line]
    restarts = [e for e in events if e["event"] == "restart"]
    assert len(restarts) == 1 and restarts[0]["exit_code"] == -signal.SIGKILL and restarts[0]["attempt"] == 1
    assert "event restart" in done.stderr
    assert [e["step"] for e in events if e["event"] == "resume"] == [8]  # the crash came at step 10
    _assert_same_run(run, reference)
