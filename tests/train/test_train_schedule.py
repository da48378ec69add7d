"""LR schedules: the LambdaLR the trainer builds gives, at every iteration, the LR of megatron-core's
OptimizerParamScheduler (the reference implementation), and the closed form at the landmark steps."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from llmctl.core.train import load_train_config
from llmctl.core.train.optim import build_scheduler

TOTAL, WARMUP, LR, MIN_LR = 40, 4, 1e-3, 1e-4


def _ours(schedule: str, **extra) -> list[float]:
    """The LR the optimizer holds while training iteration i = 1..TOTAL."""
    cfg = load_train_config({"train": {"train_iters": TOTAL, "global_batch_size": 1, "lr": LR, "min_lr": MIN_LR,
                                       "schedule": schedule, "warmup_iters": WARMUP, **extra}},
                            resolve_vocab=False)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(TOTAL):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def _megatron(style: str, **extra) -> list[float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = OptimizerParamScheduler(opt, init_lr=0.0, max_lr=LR, min_lr=MIN_LR, lr_warmup_steps=WARMUP,
                                    lr_decay_steps=TOTAL, lr_decay_style=style, start_wd=0.0, end_wd=0.0,
                                    wd_incr_steps=TOTAL, wd_incr_style="constant", **extra)
    lrs = []
    for _ in range(TOTAL):
        sched.step(1)  # Megatron's LR for iteration i is get_lr at num_steps = i (its own first step uses 0)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("ours,theirs,extra", [
    ("cosine", "cosine", {}),
    ("linear", "linear", {}),
    ("constant", "constant", {}),
    ("wsd", "WSD", {"wsd_decay_steps": 10, "lr_wsd_decay_style": "linear"}),
    ("wsd/cosine", "WSD", {"wsd_decay_steps": 10, "lr_wsd_decay_style": "cosine"}),
    ("wsd/1-sqrt", "WSD", {"wsd_decay_steps": 10, "lr_wsd_decay_style": "minus_sqrt"}),
])
def test_schedule_matches_megatron_core(ours, theirs, extra):
    schedule, _, style = ours.partition("/")
    mine = _ours(schedule, decay_fraction=0.25, decay_style=style or "linear") if schedule == "wsd" else _ours(ours)
    assert mine == pytest.approx(_megatron(theirs, **extra), rel=1e-12, abs=1e-15)


def _staged(stages: list[dict], **train) -> list[float]:
    cfg = load_train_config({"train": {"global_batch_size": 1, "lr": LR, "min_lr": MIN_LR, "warmup_iters": WARMUP,
                                       **train}, "stages": stages}, resolve_vocab=False)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(cfg.train_iters):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_stages_are_segments_of_megatron_schedules():
    """stable (warmup + constant) -> a re-warmed cosine at its own peak -> a 1-sqrt anneal: each stage is
    megatron-core's schedule over the stage's own iterations; warmup only where a stage asks (from the LR
    the previous stage ended at)."""
    lrs = _staged([{"name": "stable", "iters": 40, "schedule": "constant"},
                   {"name": "cos", "iters": 40, "schedule": "cosine", "lr": 2 * LR, "warmup_iters": WARMUP},
                   {"name": "anneal", "iters": 40, "schedule": "wsd", "decay_fraction": 0.25,
                    "decay_style": "1-sqrt", "warmup_iters": 0}])
    assert lrs[:40] == pytest.approx(_megatron("constant"), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    cos = OptimizerParamScheduler(opt, init_lr=LR, max_lr=2 * LR, min_lr=MIN_LR, lr_warmup_steps=WARMUP,
                                  lr_decay_steps=TOTAL, lr_decay_style="cosine", start_wd=0.0, end_wd=0.0,
                                  wd_incr_steps=TOTAL, wd_incr_style="constant")
    want = []
    for _ in range(TOTAL):
        cos.step(1)
        want.append(opt.param_groups[0]["lr"])
    assert lrs[40:80] == pytest.approx(want, rel=1e-12)  # re-warmed from stable's LR to its own peak
    anneal = _megatron("WSD", wsd_decay_steps=10, lr_wsd_decay_style="minus_sqrt")
    assert lrs[80:] == pytest.approx([LR] * 30 + anneal[30:], rel=1e-12)


def test_schedule_landmarks_closed_form():
    cos, lin, const, wsd = _ours("cosine"), _ours("linear"), _ours("constant"), _ours("wsd", decay_fraction=0.25)
    end = TOTAL - 1  # index of the last iteration
    mid = WARMUP + (TOTAL - WARMUP) // 2 - 1  # iteration WARMUP + 18: halfway through the decay
    for lrs in (cos, lin, const, wsd):
        assert lrs[0] == pytest.approx(LR / WARMUP)  # first step already trains
        assert lrs[WARMUP - 1] == pytest.approx(LR)  # warmup end
    assert cos[mid] == pytest.approx(MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lin[mid] == pytest.approx(MIN_LR + (LR - MIN_LR) * 0.5)
    assert const[mid] == const[end] == pytest.approx(LR)
    assert cos[end] == pytest.approx(MIN_LR) and lin[end] == pytest.approx(MIN_LR) and wsd[end] == pytest.approx(MIN_LR)
    assert wsd[TOTAL - 10 - 1] == pytest.approx(LR)  # stable until the last 25% (10 steps)
    assert wsd[TOTAL - 5 - 1] == pytest.approx(MIN_LR + (LR - MIN_LR) * 0.5)  # linear decay halfway


def test_warmup_fraction_like_megatron():
    cfg = load_train_config({"train": {"train_iters": 20000, "tokens_per_step": 524288}, "data": {"seq_length": 4096}},
                            resolve_vocab=False)
    assert cfg.warmup_iters == 200 and cfg.global_batch_size == 128 and cfg.tokens_per_step == 524288
