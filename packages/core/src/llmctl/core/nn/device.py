"""Pick the accelerator (npu > cuda > cpu) and its distributed backend. The only place that says `npu`
outside the kernel registry."""

from __future__ import annotations

import functools
import os

import torch

BACKENDS = {"npu": "hccl", "cuda": "nccl", "cpu": "gloo"}


@functools.lru_cache(maxsize=1)
def npu_available() -> bool:
    try:
        import torch_npu  # noqa: F401
    except Exception:
        return False
    return bool(getattr(torch, "npu", None)) and torch.npu.is_available()


def device_type(prefer: str | None = None) -> str:
    """'npu', 'cuda' or 'cpu'. `prefer` (or $LLMCTL_DEVICE) forces one, e.g. 'cpu' on a GPU box."""
    prefer = prefer or os.environ.get("LLMCTL_DEVICE") or "auto"
    if prefer != "auto":
        return prefer.split(":")[0]
    if npu_available():
        return "npu"
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def require_device(spec: str | torch.device) -> torch.device:
    """torch.device(spec), or one UserError line when that accelerator is not on this machine: `--device npu`
    on a box without torch_npu must say so, not raise torch's "Expected one of cpu, cuda, ..." traceback."""
    from ..errors import UserError

    kind = str(spec).split(":")[0]
    if kind == "npu" and not npu_available():
        raise UserError("device npu: no NPU visible (torch_npu not installed, or it sees no device); "
                        "`llmctl doctor` shows what this machine has")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda: no CUDA device visible (a CPU build of torch, or no GPU); "
                        "`llmctl doctor` shows what this machine has")
    try:
        return torch.device(spec)
    except RuntimeError:
        raise UserError(f"unknown device '{spec}' (cpu, cuda, npu, or auto)") from None


def pick_device(prefer: str | None = None, local_rank: int | None = None) -> torch.device:
    kind = device_type(prefer)
    if kind == "cpu":
        return torch.device("cpu")
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    require_device(kind)
    return torch.device(kind, local_rank)


def dist_backend(kind: str | None = None) -> str:
    return BACKENDS[kind or device_type()]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "npu":
        torch.npu.synchronize(device)


def max_memory_allocated_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    if device.type == "npu":
        return torch.npu.max_memory_allocated(device) / 2**30
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except Exception:
        return 0.0


def free_memory_bytes(device: torch.device) -> int | None:
    """Free accelerator memory, or None on CPU (where it cannot be asked cheaply)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "npu":
        return torch.npu.mem_get_info(device)[0]
    return None


# Dense bf16/fp16 peak TFLOP/s (no sparsity) by device name substring, for MFU.
_PEAK_TFLOPS = {"H200": 989.5, "H100": 989.5, "H800": 989.5, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
                "4090": 165.2, "910B": 313.0, "V100": 125.0}


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak FLOP/s for MFU; $LLMCTL_PEAK_TFLOPS overrides. None when unknown (CPU): MFU is then not reported."""
    env = os.environ.get("LLMCTL_PEAK_TFLOPS")
    if env:
        return float(env) * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "npu":
        name = "910B"
    else:
        return None
    for key, tflops in _PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12 / (4 if dtype == torch.float32 else 1)
    return None
