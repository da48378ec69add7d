"""Data-parallel step throughput and gradient traffic, measured in one run on this machine:

    python benchmarks/parallel_step.py                  # tiny model, seq 64, global batch 16, 20 steps, CPU
    python benchmarks/parallel_step.py --preset zen-500m --seq 4096 --gbs 16 --set train.dtype=bf16

Rows: 1 process, DDP x2 (llmctl `ddp`, no hook: torch's DistributedDataParallel untouched, the peer), FSDP2 x2,
and DDP x2 with bf16 compression and with PowerSGD (rank 1), all on the same global batch. tokens/s is the
course lab's TOKENS_PER_STEP / sec_per_step (median `elapsed time per iteration (ms)` after the first step);
bytes/step is what the gradient reduction sends per rank: for the peer every fp32 grad element (a ring
all-reduce moves ~2x that over the wire), for the hooks the `comm_mb_per_step` they log. Each run is its
own `llmctl pretrain` (torchrun for 2 processes), one thread per process (OMP_NUM_THREADS=1). This is a benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from llmctl.core.commands.bench import run_point

ROWS = [("1 process", 1, []), ("DDP x2 (torch DDP, no hook: peer)", 2, ["parallel.strategy=ddp"]),
        ("FSDP2 x2", 2, ["parallel.strategy=fsdp2"]),
        ("DDP x2 + bf16 compress", 2, ["parallel.strategy=ddp", "parallel.comm_hook=bf16"]),
        ("DDP x2 + PowerSGD r1", 2, ["parallel.strategy=ddp", "parallel.comm_hook=powersgd",
                                    "parallel.start_powersgd_iter=2"])]


def corpus(prefix: Path, vocab: int) -> Path:
    from llmctl.core.mmidx import IndexedDatasetBuilder

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        with IndexedDatasetBuilder(f"{prefix}_{split}", dtype=np.int32) as b:
            for _ in range(256):
                b.add_document(rng.integers(3, vocab, rng.integers(64, 512)))
    return prefix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--gbs", type=int, default=16)
    ap.add_argument("--mbs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per process: 1 process vs 2 is 1 core vs 2
    from llmctl.core.model_config import get_preset

    model = get_preset(a.preset)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = [f"data.path={corpus(tmp / 'c', model.vocab_size)}", f"data.seq_length={a.seq}",
                f"train.global_batch_size={a.gbs}", f"train.micro_batch_size={a.mbs}", "train.warmup_iters=2",
                "guards.enabled=false", *a.overrides]
        grads_mb = model.num_params() * 4 / 2**20
        out = []
        for i, (label, nproc, sets) in enumerate(ROWS):
            run = tmp / f"row{i}"
            row = run_point(a.preset, base + sets, [], run, a.steps, nproc, 3600)
            if row["status"] != "ok":
                out.append((label, row["status"], None, None))
                continue
            recs = [json.loads(x) for x in (run / "runs" / "base" / "run.jsonl")
                    .read_text().splitlines() if '"lr"' in x]
            mb = [r["comm_mb_per_step"] for r in recs[2:] if "comm_mb_per_step" in r]
            # FSDP2 reduce-scatters grads and all-gathers params (not logged): no figure rather than a guess
            sent = float(np.median(mb)) if mb else None if "FSDP2" in label else grads_mb if nproc > 1 else 0.0
            out.append((label, "ok", row["tokens_per_s"], sent))
    peer = next(t for label, s, t, _ in out if "peer" in label)
    print(f"{a.preset}, seq {a.seq}, global batch {a.gbs} (micro {a.mbs}), {a.steps} steps, fp32 grads {grads_mb:.2f} MB")
    print("| run | tokens/s | vs peer | grad MB sent/step/rank | vs peer |")
    print("|---|---:|---:|---:|---:|")
    for label, status, tps, mb in out:
        if status != "ok":
            print(f"| {label} | {status} | | | |")
            continue
        sent = "-" if mb is None else f"{mb:.3f} | {mb / grads_mb:.3f}x"
        print(f"| {label} | {tps:,.0f} | {tps / peer:.2f}x | {sent} |" + (" |" if mb is None else ""))


if __name__ == "__main__":
    main()
