"""Helpers for the parallel-strategy tests (a uniquely named module)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import child_env, torchrun, train_losses

ITERS = 10


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from /proc). torchrun starts each worker in its own session, so killing
    the launcher's process group alone would leave the workers running."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher's group and every worker below it (collected before anything dies)."""
    pids = descendants(proc.pid)
    for target in (lambda: os.killpg(proc.pid, signal.SIGKILL), *[lambda p=p: os.kill(p, signal.SIGKILL) for p in pids]):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


def rank_pid(proc: subprocess.Popen, rank: int) -> int | None:
    """The torchrun worker of `rank` under `proc`."""
    for pid in descendants(proc.pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and any(e.startswith(b"LOCAL_RANK=") for e in env):
            return pid
    return None


def run_tree(cmd: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `cmd` in its own session; whatever happens, nothing it started survives."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise AssertionError(f"timed out after {timeout}s: {' '.join(cmd)}\n{proc.stdout.read()[-4000:]}") from None
    finally:
        kill_tree(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def write_pattern_corpus(prefix: Path, docs: int = 96) -> Path:
    """PREFIX_train/_val: arithmetic token runs (a stride per document), learnable within ten steps."""
    from llmctl.core.mmidx import IndexedDatasetBuilder

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        with IndexedDatasetBuilder(f"{prefix}_{split}", dtype=np.uint16) as builder:
            for _ in range(docs):
                start, stride, n = rng.integers(3, 200), rng.integers(1, 4), rng.integers(40, 120)
                builder.add_document((start + stride * np.arange(n)) % 250 + 3)
    return prefix


def sets(corpus: Path, run: Path, *extra: str) -> list[str]:
    return [f"data.path={corpus}", "data.seq_length=32", f"train.train_iters={ITERS}",
            "train.global_batch_size=8", "train.micro_batch_size=2", "train.lr=1e-2", "train.warmup_iters=2",
            "eval.iters=1", "eval.interval=0", f"checkpoint.dir={run / 'ckpt'}", "checkpoint.interval=5",
            "checkpoint.keep=null", f"logging.dir={run / 'logs'}", "logging.name=run", "logging.interval=1",
            "model.max_seq_len=64", *extra]


def cli_args(overrides: list[str]) -> list[str]:
    return ["pretrain", "-c", "tiny", *[a for s in overrides for a in ("--set", s)]]


def pretrain_in_process(overrides: list[str], resume: str | None = None):
    """A 1-process run here, on one thread like the torchrun children (fp32 CPU results depend on it)."""
    from llmctl.core.train import load_train_config, pretrain

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pretrain(load_train_config("tiny", overrides), resume=resume, echo=lambda line: None)
    finally:
        torch.set_num_threads(threads)


def launch_cached(cache, root, corpus, site, name, overrides, *, nproc: int = 2, env=None, args=()):
    if name not in cache:
        run = root / name
        done = run_tree(torchrun(nproc, *cli_args(sets(corpus, run, *overrides)), *args),
                         child_env(site, **(env or {})), timeout=240)
        assert done.returncode == 0, done.stdout[-4000:]
        cache[name] = run
    return cache[name]


def records(run: Path) -> list[dict]:
    path = run / "logs" / "run.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if "lr" in r and "event" not in r]


def losses(run: Path) -> dict[int, float]:
    return train_losses(run / "logs" / "run.jsonl")


def assert_losses_match(run: Path, reference: Path, rel: float, steps=None) -> None:
    got, want = losses(run), losses(reference)
    steps = sorted(want) if steps is None else list(steps)
    assert set(steps) <= set(got), (sorted(got), steps)
    bad = [(s, got[s], want[s]) for s in steps if got[s] != pytest.approx(want[s], rel=rel)]
    assert not bad, f"(step, got, one process) beyond rel {rel}: {bad}"


def final_state(run: Path, iteration: int | None = None) -> dict:
    from llmctl.core.nn.checkpoint import load_checkpoint

    return load_checkpoint(run / "ckpt", iteration)[0]


def assert_same_state(got: dict, want: dict, rtol: float, atol: float) -> None:
    """Model weights and the optimizer state, in torch's native (index-keyed) layout."""
    assert got["model"].keys() == want["model"].keys()
    for name, tensor in want["model"].items():
        torch.testing.assert_close(got["model"][name], tensor, rtol=rtol, atol=atol, msg=name)
    go, wo = got["optimizer"], want["optimizer"]
    assert go["state"].keys() == wo["state"].keys()
    assert [sorted(g) for g in go["param_groups"]] == [sorted(g) for g in wo["param_groups"]]
    assert [g["params"] for g in go["param_groups"]] == [g["params"] for g in wo["param_groups"]]
    for i, s in wo["state"].items():
        for key, value in s.items():
            torch.testing.assert_close(go["state"][i][key], value, rtol=rtol, atol=atol, msg=f"{i}.{key}")
