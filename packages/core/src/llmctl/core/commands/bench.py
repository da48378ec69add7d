"""`llmctl bench throughput --config C --sweep micro_batch=1,2,4 --sweep tp=1,2`: the course lab's throughput
ablation. Every point of the grid is a real `llmctl pretrain` run in its own process (under torchrun with
--nproc-per-node), measured as the lab does: TOKENS_PER_STEP / sec_per_step, sec_per_step from the
`elapsed time per iteration (ms)` of its Megatron-format log (median after the first step), plus MFU and peak
memory from its metrics. A point that fails (invalid layout, OOM, crash) is a row saying why, not a crash of
the sweep. Writes a markdown table and a bar chart ranking the points. Torch-free: the runs import torch.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import UserError
from ..io import write_json_atomic, write_text_atomic
from ..plot import pyplot, read_log, save_figure, summary_table, throughput

ALIASES = {"micro_batch": "train.micro_batch_size", "batch_size_per_device": "train.micro_batch_size",
           "mbs": "train.micro_batch_size", "gbs": "train.global_batch_size",
           "global_batch": "train.global_batch_size", "tokens_per_step": "train.tokens_per_step",
           "tp": "parallel.tp", "pp": "parallel.pp", "cp": "parallel.cp", "strategy": "parallel.strategy",
           "num_layer_list": "parallel.num_layer_list", "seq": "data.seq_length"}


def parse_sweeps(specs: tuple[str, ...]) -> list[tuple[str, str, list[str]]]:
    """"micro_batch=1,2,4" -> [("micro_batch", "train.micro_batch_size", ["1", "2", "4"])]."""
    out = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not values.strip():
            raise UserError(f"--sweep {spec!r}: expected NAME=V1,V2,... (e.g. micro_batch=1,2,4)")
        key = ALIASES.get(name.strip(), name.strip())
        if "." not in key:
            raise UserError(f"--sweep {name}: not one of {', '.join(ALIASES)} nor a dotted config key")
        out.append((name.strip(), key, [v.strip() for v in values.split(",") if v.strip()]))
    return out


def grid(sweeps) -> list[list[tuple[str, str, str]]]:
    return [list(zip([n for n, _, _ in sweeps], [k for _, k, _ in sweeps], combo))
            for combo in itertools.product(*[values for _, _, values in sweeps])]


def point_overrides(point, run: Path, steps: int) -> list[str]:
    sets = []
    for _, key, value in point:
        sets.append(f"{key}={value}")
        if key == "train.tokens_per_step":
            sets.append("train.global_batch_size=null")
        if key == "train.global_batch_size":
            sets.append("train.tokens_per_step=null")
    return [*sets, f"train.train_iters={steps}", "train.train_tokens=null", "checkpoint.dir=null",
            "checkpoint.interval=0", "checkpoint.resume=null", "eval.iters=0", f"logging.dir={run}",
            "logging.name=run", "logging.interval=1", "logging.sinks=[jsonl]"]


def _why(output: str, code: int) -> str:
    if re.search(r"out of memory|OutOfMemoryError|CUDA error: out of memory", output, re.I):
        return "OOM"
    errors = [line[len("error: "):] for line in output.splitlines() if line.startswith("error: ")]
    return errors[0] if errors else f"exit {code}: " + (output.strip().splitlines() or [""])[-1][-160:]


def measure(run: Path) -> dict[str, Any]:
    """The lab's figures from one run's logs."""
    curve = read_log(run / "run.log")
    records = [json.loads(line) for line in (run / "run.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in records if "lr" in r and "event" not in r]
    ms, _ = throughput(curve)
    tokens_per_step = curve.tokens_per_step or (train[-1]["tokens_per_s"] * train[-1]["step_ms"] / 1000.0
                                                if train else None)
    mfu = [r["mfu"] for r in train[1:] or train if r.get("mfu") is not None]
    mem = [r["mem_gb"] for r in train if r.get("mem_gb") is not None]
    return {"tokens_per_step": round(tokens_per_step) if tokens_per_step else None, "sec_per_step":
            ms / 1000.0 if ms else None, "tokens_per_s": (tokens_per_step / (ms / 1000.0)) if ms else None,
            "mfu": statistics.median(mfu) if mfu else None, "peak_mem_gb": max(mem) if mem else None}


def run_point(config: str, base: list[str], point, out: Path, steps: int, nproc: int, timeout: float) -> dict:
    label = " ".join(f"{n}={v}" for n, _, v in point) or "base"
    run = out / "runs" / re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)
    cmd = [sys.executable, "-m", "llmctl.cli", "pretrain", "-c", config,
           *[a for s in (*base, *point_overrides(point, run, steps)) for a in ("--set", s)]]
    if nproc > 1:
        cmd += ["--nproc-per-node", str(nproc)]
    row: dict[str, Any] = {"config": label}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, start_new_session=True)
        text = done.stdout + done.stderr
        code = done.returncode
    except subprocess.TimeoutExpired:
        text, code = "", None
    if code != 0:
        return {**row, "status": "timeout" if code is None else _why(text, code)}
    return {**row, "status": "ok", **measure(run)}


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict], nproc: int) -> str:
    lines = [f"Throughput sweep ({nproc} process{'es' if nproc > 1 else ''}); tokens/s = TOKENS_PER_STEP / "
             "sec_per_step (sec_per_step: median `elapsed time per iteration (ms)` after the first step).", "",
             "| rank | config | TOKENS_PER_STEP | sec_per_step | tokens/s | MFU | peak mem (GB) | status |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    for i, r in enumerate(rows, 1):
        ok = r["status"] == "ok"
        lines.append(f"| {i if ok else '-'} | {r['config']} | {_fmt(r.get('tokens_per_step'), ',')} | "
                     f"{_fmt(r.get('sec_per_step'), '.4f')} | {_fmt(r.get('tokens_per_s'), ',.0f')} | "
                     f"{_fmt(r.get('mfu'), '.1%')} | {_fmt(r.get('peak_mem_gb'), '.2f')} | "
                     f"{r['status'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], output: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 3.6))
    values = [r.get("tokens_per_s") or 0.0 for r in rows]
    bars = ax.bar(range(len(rows)), values, color=["tab:blue" if r["status"] == "ok" else "tab:gray" for r in rows])
    for bar, r in zip(bars, rows):
        if r["status"] != "ok":
            ax.text(bar.get_x() + bar.get_width() / 2, 0, "failed", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(rows)), [r["config"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("tokens/s (TOKENS_PER_STEP / sec_per_step)")
    ax.set_title("throughput ablation")
    return save_figure(fig, output)


def sweep(config: str, specs: tuple[str, ...], base: list[str], steps: int, nproc: int, out: Path,
          timeout: float, echo=click.echo) -> list[dict]:
    from ..train.config import load_train_config

    load_train_config(config, base, resolve_vocab=False)  # a bad base config fails once, before any run
    points = grid(parse_sweeps(specs))
    rows = []
    for point in points:
        rows.append(run_point(config, base, point, out, steps, nproc, timeout))
        echo(f"  {rows[-1]['config']}: {rows[-1]['status']}"
             + (f", {rows[-1]['tokens_per_s']:,.0f} tokens/s" if rows[-1].get("tokens_per_s") else ""))
    rows.sort(key=lambda r: (r["status"] != "ok", -(r.get("tokens_per_s") or 0.0)))
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "throughput.md", markdown(rows, nproc))
    write_json_atomic(out / "throughput.json", {"nproc_per_node": nproc, "steps": steps, "rows": rows})  # report
    bar_chart(rows, out / "throughput.png")
    return rows


@click.group("bench")
def bench_group() -> None:
    """Throughput from training logs, as the course lab measures it (TOKENS_PER_STEP / sec_per_step).

    \b
    Example:
      llmctl bench throughput logs/tp1.log logs/tp2.log --seq-length 4096   # same table as `plot summary`
      llmctl bench throughput -c tiny --sweep micro_batch=1,2,4 --sweep tp=1,2 --steps 10   # run and rank
    """


@bench_group.command("throughput")
@click.argument("logs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("-c", "--config", default=None, metavar="FILE|PRESET", help="Run a sweep of this training config.")
@click.option("--sweep", "sweeps", multiple=True, metavar="NAME=V1,V2",
              help=f"A swept key (repeatable; the grid is their product): {', '.join(ALIASES)} or any dotted key.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key for every run.")
@click.option("--steps", type=click.IntRange(min=2), default=10, show_default=True, help="Training steps per run.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes per run (torchrun, the lab's GPUS_PER_NODE).")
@click.option("-o", "--output", default="bench/throughput", show_default=True, type=click.Path(file_okay=False),
              help="Folder for throughput.md/.json/.png and the runs' logs.")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="Seconds before a run counts as failed.")
@click.option("--seq-length", type=click.IntRange(min=1), default=None, help="For LOGS: Megatron logs' seq length.")
def throughput_command(logs, config, sweeps, overrides, steps, nproc_per_node, output, timeout, seq_length) -> None:
    """Throughput as the course lab measures it (TOKENS_PER_STEP / sec_per_step): of existing training LOGS,
    or of a sweep that runs each configuration (-c CONFIG --sweep ...) and ranks them.

    \b
    Example:
      llmctl bench throughput logs/tp1.log logs/tp2.log --seq-length 4096
      llmctl bench throughput -c zen-500m --sweep micro_batch=1,2,4 --sweep tp=1,2 --steps 20 --nproc-per-node 8
    """
    if config is None:
        if not logs or sweeps:
            raise UserError("give training logs, or -c CONFIG with --sweep NAME=V1,V2 to run a sweep")
        click.echo(summary_table(logs, seq_length), nl=False)  # the table `plot summary` prints
        return
    if logs:
        raise UserError("give training logs or -c CONFIG, not both")
    out = Path(output)
    rows = sweep(config, sweeps, list(overrides), steps, nproc_per_node, out, timeout)
    click.echo(markdown(rows, nproc_per_node), nl=False)
    click.echo(f"wrote {out / 'throughput.md'} and {out / 'throughput.png'}")
