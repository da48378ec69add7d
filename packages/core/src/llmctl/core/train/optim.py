"""The optimizer and LR schedule every task trains with: AdamW without decay on 1-D parameters (Megatron's
rule), fused on CUDA and CPU, and the closed-form schedules of `schedule.py`, one segment per stage of the
run's plan (`stages.py`), as a LambdaLR."""

from __future__ import annotations

import torch

from .config import TrainConfig
from .stages import StagePlan

#: Optimizer-state key naming the parameters of each param group (a sharded save writes it; torch's own
#: format numbers them instead, in `decay_groups` order).
PARAM_NAMES_KEY = "llmctl_param_names"


def decay_groups(params: list[torch.nn.Parameter]) -> list[list[torch.nn.Parameter]]:
    """[decayed, not decayed] in `params`' order: like Megatron, no weight decay on biases and norm weights
    (every 1-D parameter). The optimizer's param groups, so also the order torch numbers its state in."""
    return [[p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]]


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `decay_groups(params)`."""
    t = cfg.train
    decayed, plain = decay_groups(params)
    groups = [{"params": decayed, "weight_decay": t.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), eps=t.eps, **adamw_impl(params))


#: devices where torch's fused AdamW kernel (one pass over param, grad and both moments) runs; on CPU it is
#: ~6x faster than the foreach implementation, which makes several passes (HF Trainer's default there too)
FUSED_ADAMW_DEVICES = ("cuda", "cpu")


def adamw_impl(params: list[torch.nn.Parameter]) -> dict[str, bool]:
    fused = params[0].device.type in FUSED_ADAMW_DEVICES
    return {"fused": fused, "foreach": not fused}


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    plan: StagePlan | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """After k completed steps the optimizer holds the plan's LR for iteration k + 1. The LambdaLR's base is
    the plan's peak LR (train.lr for a run without stages)."""
    plan = plan or cfg.plan()
    base = lr_base(cfg, plan)
    for group in optimizer.param_groups:
        group["lr"] = base
    fn = (lambda k: 0.0) if base == 0 else (lambda k: plan.lr_at(k + 1) / base)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [fn] * len(optimizer.param_groups))


def lr_base(cfg: TrainConfig, plan: StagePlan) -> float:
    return plan.peak_lr if plan.explicit else cfg.train.lr


def set_scheduled_lr(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                     base: float) -> None:
    """This plan's base and LR at the scheduler's position in every param group, after loading a checkpoint
    (saved by the same plan: no change; by another: a branch, or the run it branched from)."""
    scheduler.base_lrs = [base] * len(optimizer.param_groups)
    for group, fn in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = base
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
