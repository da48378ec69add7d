"""`llmctl pretrain --nproc-per-node N`: check the layout for N processes, then exec torchrun on the same
command without the flag. Also the course lab's knobs under their own names (torch-free).

The lab's scripts export TP, PP, CP, GPUS_PER_NODE, BATCH_SIZE_PER_DEVICE, TOKENS_PER_STEP (and
--num-layer-list); each is a flag of `llmctl pretrain` and, with `--lab-env`, is read from the environment
when its flag is not given. Reading such short names implicitly would let any shell variable change a
run, hence the explicit opt-in.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

# flag dest -> (lab name, config key it sets)
KNOBS: dict[str, tuple[str, str]] = {
    "tp": ("TP", "parallel.tp"),
    "pp": ("PP", "parallel.pp"),
    "cp": ("CP", "parallel.cp"),
    "num_layer_list": ("NUM_LAYER_LIST", "parallel.num_layer_list"),
    "batch_size_per_device": ("BATCH_SIZE_PER_DEVICE", "train.micro_batch_size"),
    "tokens_per_step": ("TOKENS_PER_STEP", "train.tokens_per_step"),
}
NPROC_ENV = "GPUS_PER_NODE"


def knob_values(flags: Mapping[str, Any], environ: Mapping[str, str] | None) -> dict[str, Any]:
    """The knobs set by flag, else (when `environ` is given: --lab-env) by the lab's variable."""
    values = {k: v for k, v in flags.items() if v is not None}
    if environ is not None:
        for dest, (env, _) in {**KNOBS, "nproc_per_node": (NPROC_ENV, "")}.items():
            if dest not in values and environ.get(env, "") != "":
                values[dest] = environ[env]
    return values


def knob_overrides(values: Mapping[str, Any]) -> list[str]:
    """`--set` overrides for the knobs (TOKENS_PER_STEP replaces the config's global batch size)."""
    out = []
    for dest, (_, key) in KNOBS.items():
        if dest in values:
            out.append(f"{key}={values[dest]}")
            if dest == "tokens_per_step":
                out.append("train.global_batch_size=null")
    return out


def pretrain_args(config: str, overrides: list[str], resume: str | None, stop_at_step: int | None) -> list[str]:
    args = ["pretrain", "-c", config, *[a for o in overrides for a in ("--set", o)]]
    if resume:
        args += ["--resume", resume]
    if stop_at_step:
        args += ["--stop-at-step", str(stop_at_step)]
    return args


def torchrun_command(nproc: int, args: list[str], max_restarts: int = 0) -> list[str]:
    """One node (`--standalone`: a free local rendezvous); a restart resumes from the latest checkpoint."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "--max-restarts", str(max_restarts), "-m", "llmctl.cli", *args]


def preflight(cfg, nproc: int) -> None:
    """The strategy's own check for `nproc` processes, before torchrun starts any of them (for every stage of
    a run in stages: each has its own sequence length and batch)."""
    from ..plugins import lookup
    from .parallelism import resolve_strategy  # torch: only once torchrun is to be launched

    strategy = lookup("parallelisms", resolve_strategy(cfg, nproc))
    strategy.preflight(cfg, nproc)
    if cfg.staged:
        for stage in cfg.plan().stages:
            strategy.preflight(cfg.stage_config(stage), nproc)


def exec_torchrun(cfg, nproc: int, args: list[str], max_restarts: int) -> None:
    preflight(cfg, nproc)
    cmd = torchrun_command(nproc, args, max_restarts)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
