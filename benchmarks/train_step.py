"""Train-step throughput: llmctl's Transformer vs Hugging Face LlamaForCausalLM on the same config, batch,
sequence length, thread count, dtype and optimizer (AdamW), measured in one run and interleaved so machine
noise hits both alike. Prints tokens/s for each, the ratio, and MFU where the device's peak is known.

    python benchmarks/train_step.py                       # CPU, ~58M-param llama, seq 512 (a few minutes)
    python benchmarks/train_step.py --device cuda --preset zen-500m --seq 4096 --dtype bf16 --compile

Each contender is a `Variant`: a name and a function building (model, step) for a shared `Setup`. The
trainer-loop variant (llmctl's full training loop: grad accumulation, clipping, schedule) plugs into VARIANTS
the same way. This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from typing import Callable

import torch
from llmctl.core.nn.device import peak_flops, pick_device, synchronize
from llmctl.core.nn.hf_adapters import adapter_for
from llmctl.core.nn.kernels import select_kernels
from llmctl.core.nn.build import parse_dtype
from llmctl.core.model_config import ModelConfig, get_preset
from llmctl.core.nn.model import Transformer

#: The CPU default: a ~58M-parameter llama (untied 32k vocab) that trains a step in seconds on a laptop.
BENCH_CPU = ModelConfig(
    vocab_size=32000,
    hidden_size=512,
    num_layers=8,
    num_heads=8,
    num_kv_heads=8,
    ffn_hidden_size=1408,
    max_seq_len=4096,
)


@dataclasses.dataclass
class Setup:
    cfg: ModelConfig
    device: torch.device
    dtype: torch.dtype  # compute dtype: fp32 runs in fp32, bf16/fp16 under autocast with fp32 master weights
    batch: int
    seq: int
    compile: bool
    lr: float = 1e-4

    def autocast(self):
        enabled = self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)


Step = Callable[[torch.Tensor], float]  # tokens [B, seq+1] -> loss


@dataclasses.dataclass
class Variant:
    name: str
    build: Callable[[Setup], tuple[torch.nn.Module, Step]]


def _optimizer(model: torch.nn.Module, setup: Setup) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        model.parameters(), lr=setup.lr, weight_decay=0.1, fused=setup.device.type == "cuda" or None
    )


def build_llmctl(setup: Setup):
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(setup.cfg)).to(setup.device)
    model.set_kernels(select_kernels(setup.device.type))  # what `llmctl pretrain` picks on this device
    model.train()
    fwd = torch.compile(model) if setup.compile else model
    opt = _optimizer(model, setup)

    def step(batch: torch.Tensor) -> float:
        with setup.autocast():
            loss = fwd(batch[:, :-1], batch[:, 1:]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return model, step


def build_hf(setup: Setup):
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = adapter_for(dataclasses.replace(setup.cfg, family="llama")).config_to_hf(setup.cfg)
    hf_cfg = {
        k: v
        for k, v in hf_cfg.items()
        if k not in ("architectures", "model_type", "torch_dtype", "use_cache")
    }
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**hf_cfg, attn_implementation="sdpa", use_cache=False)).to(
        setup.device
    )
    model.train()
    fwd = torch.compile(model) if setup.compile else model
    opt = _optimizer(model, setup)

    def step(batch: torch.Tensor) -> float:
        # same tokens in, same number of predicted positions: HF shifts labels itself
        with setup.autocast():
            out = fwd(input_ids=batch[:, :-1], labels=batch[:, :-1])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.detach()

    return model, step


VARIANTS = {v.name: v for v in (Variant("llmctl", build_llmctl), Variant("hf", build_hf))}


class _NoData:
    """The trainer's dataset slot: the benchmark feeds batches itself, so nothing is ever read."""

    source_names = ["bench"]

    def __init__(self, *args, **kwargs):
        pass

    def __len__(self) -> int:
        return 1


def build_trainer(setup: Setup):
    """llmctl's whole optimizer step as `llmctl pretrain` runs it (Trainer.train_step: weight-decay groups,
    grad-norm clipping, the guard's per-step read of loss and grad norm, channel-loss bookkeeping, LR
    schedule), fed the same batch as the bare "llmctl" step: the difference is the loop's overhead."""
    import tempfile

    from llmctl.core.config import to_dict
    from llmctl.core.plugins import get_bus, hookimpl
    from llmctl.core.train import Trainer, load_train_config

    class _Plugin:
        @hookimpl
        def register_datasets(self, register):
            register("bench-none", _NoData)

    if not get_bus().pm.has_plugin("bench-none"):
        get_bus().register_plugin(_Plugin(), "bench-none")
    dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[setup.dtype]
    cfg = load_train_config({
        "model": to_dict(setup.cfg),
        "data": {"path": "unused", "dataset": "bench-none", "seq_length": setup.seq},
        "train": {"train_iters": 10**6, "global_batch_size": setup.batch, "micro_batch_size": setup.batch,
                  "lr": setup.lr, "schedule": "constant", "warmup_iters": 0, "dtype": dtype,
                  "compile": setup.compile, "device": setup.device.type},
        "eval": {"iters": 0},
        "logging": {"dir": tempfile.mkdtemp(prefix="bench-trainer-"), "sinks": []},
    })
    torch.manual_seed(0)
    trainer = Trainer(cfg, echo=lambda line: None)
    source = torch.zeros(setup.batch, dtype=torch.long, device=setup.device)
    steps = iter(range(1, 10**9))

    def step(batch: torch.Tensor) -> float:
        trainer.train_step(next(steps), [{"tokens": batch, "source": source}])
        return trainer.last_grad_norm

    return trainer.raw, step


VARIANTS["trainer"] = Variant("trainer", build_trainer)


def measure(setup: Setup, names: list[str], warmup: int, steps: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per step for each variant; rounds alternate between variants so drift hits all equally."""
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, setup.cfg.vocab_size, (setup.batch, setup.seq + 1), generator=g).to(setup.device)
    built = {n: VARIANTS[n].build(setup) for n in names}
    for name, (_, step) in built.items():
        for _ in range(warmup):
            step(batch)
        synchronize(setup.device)
        print(f"  {name}: warmed up ({warmup} steps)", file=sys.stderr)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name, (_, step) in built.items():
            synchronize(setup.device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step(batch)
            synchronize(setup.device)
            times[name].append((time.perf_counter() - t0) / steps)
        print(
            f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1] * 1e3:.0f} ms/step" for n in names),
            file=sys.stderr,
        )
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda, npu (default cpu)")
    p.add_argument("--preset", default=None, help="llmctl model preset (default: the ~58M CPU bench config)")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="fp32", help="fp32, or bf16/fp16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for both (default: all cores)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=1, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--variants", default="llmctl,hf", help=f"comma list from {', '.join(VARIANTS)}")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    cfg = get_preset(args.preset) if args.preset else dataclasses.replace(BENCH_CPU)
    setup = Setup(
        cfg=cfg,
        device=pick_device(args.device),
        dtype=parse_dtype(args.dtype),
        batch=args.batch,
        seq=args.seq,
        compile=args.compile,
    )
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    print(
        f"train step: {cfg.num_params() / 1e6:.1f}M params (h={cfg.hidden_size}, L={cfg.num_layers}, "
        f"heads={cfg.num_heads}/{cfg.kv_heads}, vocab={cfg.vocab_size}), "
        f"batch {args.batch} x seq {args.seq}, "
        f"{setup.device} {args.dtype}{' compiled' if args.compile else ''}, "
        f"threads {torch.get_num_threads()}, "
        f"AdamW, torch {torch.__version__}",
        file=sys.stderr,
    )
    times = measure(setup, names, args.warmup, args.steps, args.rounds)

    tokens = args.batch * args.seq
    peak = peak_flops(setup.device, setup.dtype)
    flops = cfg.flops_per_token(args.seq)
    rate = {}
    # best round = least disturbed by other load (timeit's rule); the median shows how noisy the machine was
    print(f"{'variant':<10} {'ms/step':>9} {'median':>9} {'tokens/s':>10} {'MFU':>7}")
    for name in names:
        best = min(times[name])
        rate[name] = tokens / best
        mfu = f"{100 * rate[name] * flops / peak:.1f}%" if peak else "n/a"
        print(
            f"{name:<10} {best * 1e3:>9.1f} {statistics.median(times[name]) * 1e3:>9.1f} "
            f"{rate[name]:>10.0f} {mfu:>7}"
        )
    if "llmctl" in rate and "hf" in rate:
        print(f"llmctl / hf tokens/s ratio: {rate['llmctl'] / rate['hf']:.2f}x")


if __name__ == "__main__":
    main()
