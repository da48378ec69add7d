"""The run record: what a report or an experiment tracker needs to say which run this was — the resolved
config and the environment it ran in — written once per start into the run's own metric streams.

It is one JSONL line `{"run": {"config": ..., "environment": ..., "started": ..., "start_step": N}}` (no
`step`, `event` or metric keys, so every reader of training records passes over it), handed to every sink
(the wandb sink logs it as the run's config), plus one human line in RUN.log. Keeping it inside the JSONL
means a log is self-describing without checkpoints, and one process still writes one log. A resumed run
writes a new record: the newest one describes the environment the latest steps ran in.

Registered as the built-in callback "run-record", so every training run (pretrain, finetuning, each torchrun
worker) does this from outside the driver; only the log-writing rank writes.
"""

from __future__ import annotations

import os
import platform
import socket
from datetime import datetime
from typing import Any

#: Environment variables worth a bug report or a lab report: the launcher's and the collective libraries'
#: knobs (the course lab sets HCCL_* and ASCEND_* ones). Names holding secrets are never recorded.
ENV_PREFIXES = ("HCCL_", "NCCL_", "ASCEND_", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_MAX_CONNECTIONS", "OMP_NUM_THREADS",
                "TORCH_NCCL_", "PYTORCH_NPU_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF", "LLMCTL_")
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def _env_vars() -> dict[str, str]:
    return {k: v for k, v in sorted(os.environ.items())
            if k.startswith(ENV_PREFIXES) and not any(w in k.upper() for w in SECRET_WORDS)}


def environment(trainer: Any) -> dict[str, Any]:
    """Software, hardware and layout of this run, as JSON-able values."""
    import torch

    from .. import deps

    device = trainer.device
    par = trainer.par
    env: dict[str, Any] = {
        "host": socket.gethostname(), "python": platform.python_version(), "platform": platform.platform(),
        "llmctl": {d: v for d in deps.LLMCTL_DISTS if (v := deps.version_of(d))},
        "torch": torch.__version__, "cuda_build": torch.version.cuda,
        "device": str(device), "device_type": device.type, "world_size": par.world_size, "dp_size": par.dp_size,
        "parallel": par.describe(), "dtype": trainer.cfg.train.dtype,
    }
    kernels = getattr(par.unwrap(trainer.module), "ops", None)
    if kernels is not None:
        env["kernels"] = dict(getattr(kernels, "names", {}))
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["devices_visible"] = torch.cuda.device_count()
    elif device.type == "npu":
        env["device_name"] = torch.npu.get_device_name(device)
        env["devices_visible"] = torch.npu.device_count()
        cann = deps.cann_info()
        env.update(torch_npu=cann["torch_npu"], cann=cann["version"], ascend_driver=cann["driver"])
    env["env"] = _env_vars()
    return env


def summary_line(env: dict[str, Any]) -> str:
    where = env["device"] + (f" ({env['device_name']})" if env.get("device_name") else "")
    extra = f", torch_npu {env['torch_npu']}, CANN {env['cann']}" if env.get("device_type") == "npu" else ""
    return (f" > environment: host {env['host']}, python {env['python']}, torch {env['torch']}{extra}, "
            f"device {where}, {env['world_size']} process{'es' if env['world_size'] > 1 else ''}")


class RunRecord:
    """Writes the run record at the start of training (after a resume has restored the step)."""

    def on_train_start(self, trainer: Any) -> None:
        log = trainer.log
        if not trainer.par.is_log_writer or not log.enabled:
            return
        from ..config import to_dict

        env = environment(trainer)
        record = {"run": {"config": to_dict(trainer.cfg), "environment": env,
                          "started": datetime.now().isoformat(timespec="seconds"),
                          "start_step": trainer.state.iteration}}
        for sink in log.sinks:
            sink.write(record)
        log.note(summary_line(env))


def is_run_record(record: dict[str, Any]) -> bool:
    return isinstance(record.get("run"), dict) and "config" in record["run"]
