"""Helpers for the engine tests: a tiny random corpus in Megatron's format, torchrun launches that never
leave orphans, and reading a run's logs and final weights."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np


def write_random_corpus(prefix: Path, vocab: int = 1000, docs: int = 64, seed: int = 0) -> Path:
    """PREFIX_train / PREFIX_val .bin/.idx of random documents (what `llmctl data tokenize` would write)."""
    from llmctl.core.mmidx import IndexedDatasetBuilder

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        with IndexedDatasetBuilder(f"{prefix}_{split}", dtype=np.uint16) as builder:
            for _ in range(docs):
                builder.add_document(rng.integers(3, vocab, rng.integers(20, 120)))
    return prefix


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def torchrun(nproc: int, *args: str, max_restarts: int = 0) -> list[str]:
    """torchrun with c10d rendezvous: each restart round gets a fresh store (the static backend keeps the
    first round's keys, so restarted gloo workers would dial the dead workers' addresses)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--nnodes", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
            "--max-restarts", str(max_restarts), "-m", "llmctl.cli", *args]


def child_env(site: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLMCTL_FAULTS", "LLMCTL_LOAD_PLUGINS")}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LLMCTL_PROGRESS": "0", **extra}


def train_losses(log: Path) -> dict[int, float]:
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in records if "lr" in r and "event" not in r}


def events(log: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, log.read_text().splitlines()) if r.get("event") == kind]
