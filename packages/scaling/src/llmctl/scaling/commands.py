"""`llmctl scaling plan|run|fit|predict`: the CLI face of llmctl.scaling (numpy/scipy imported per command)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from llmctl.core.errors import UserError


def _floats(value: str | None, flag: str) -> list[float]:
    if not value:
        return []
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated numbers, got '{value}'") from None


@click.group("scaling")
def scaling_group() -> None:
    """Decide what to train from a scaling-law fit of small runs: plan a grid, run it, fit, predict.

    \b
    Example:
      llmctl scaling plan -c tiny --set data.path=data/corpus --budgets 1e12,3e12,1e13 --out grid.yaml --print
      llmctl scaling run grid.yaml --out-dir sweeps/s1
      llmctl scaling fit sweeps/s1 --bootstrap 1000
      llmctl scaling predict sweeps/s1/fit.json --budget 5.76e23
    """


@scaling_group.command("plan")
@click.option("-c", "--config", "config", required=True, metavar="FILE|PRESET", help="The base pretrain config.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a base config key.")
@click.option("--budgets", required=True, metavar="C1,C2,...", help="Training FLOP budgets, one isoFLOP profile each.")
@click.option("--points", type=int, default=5, show_default=True, help="Model sizes per budget (>= 3).")
@click.option("--tokens-per-param", type=float, default=20.0, show_default=True,
              help="Centre of each profile: N* = sqrt(C / (6 x this)); toy CPU budgets want ~1.")
@click.option("--span", type=float, default=16.0, show_default=True, help="Largest / smallest N in a profile.")
@click.option("--params", "params_kind", type=click.Choice(["non-embedding", "total"]), default="non-embedding",
              show_default=True, help="Which N the law uses (both are recorded).")
@click.option("--flops", "flop_model", type=click.Choice(["6nd", "full"]), default="6nd", show_default=True,
              help="6nd: C = 6 N D (attention left out); full: 6 x matmul weights + causal attention per token.")
@click.option("--tp", type=click.IntRange(min=1), default=1, help="Shapes must split over this TP size.")
@click.option("--lr-sweep", default=None, metavar="0.5,1,2", help="Repeat each point at these multiples of the LR.")
@click.option("--batch-sweep", default=None, metavar="0.5,1,2",
              help="Repeat each point at these multiples of the global batch.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the grid YAML here.")
@click.option("--print", "print_table", is_flag=True, help="Print the table of points.")
def plan_command(config, overrides, budgets, points, tokens_per_param, span, params_kind, flop_model, tp, lr_sweep,
                 batch_sweep, out, print_table) -> None:
    """Plan an isoFLOP grid of proportional model shapes (layers and hidden size grow together).

    \b
    Example:
      llmctl scaling plan -c zen-500m --set data.path=data/corpus --budgets 1e18,3e18,1e19 --out grid.yaml --print
      llmctl scaling plan -c tiny --budgets 1e10,2e10,4e10 --points 3 --tokens-per-param 1 --lr-sweep 0.5,1,2
    """
    from llmctl.core.io import write_text_atomic

    from .grid import resolve_points
    from .plan import PlanOptions, plan, table

    opts = PlanOptions(budgets=_floats(budgets, "--budgets"), points=points, tokens_per_param=tokens_per_param,
                       span=span, params=params_kind, flops=flop_model, tp=tp,
                       lr_sweep=_floats(lr_sweep, "--lr-sweep"), batch_sweep=_floats(batch_sweep, "--batch-sweep"))
    grid = plan(config, list(overrides), opts)
    resolved = resolve_points(grid)
    if print_table or not out:
        click.echo(table(resolved))
    if out:
        import yaml

        header = ("# llmctl scaling grid: every point is `base` + `set` + its model/train keys; edit freely.\n"
                  "# params/tokens/flops are the plan's figures for the reader; `run` recomputes them.\n")
        write_text_atomic(out, header + yaml.safe_dump(grid, sort_keys=False))
        click.echo(f"grid: {out} ({len(resolved)} points over {len(opts.budgets)} budgets, N = {params_kind}, "
                   f"FLOPs = {flop_model})")


@scaling_group.command("run")
@click.argument("grid", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--executor", type=click.Choice(["local", "torchrun", "ray"]), default="local", show_default=True,
              help="local: one run after another here; torchrun: each under torchrun; ray: one Ray task per run.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=None, help="Processes (GPUs) per run.")
@click.option("--ray-address", default=None, help="Ray cluster to join (auto, HOST:PORT); default: a local Ray.")
@click.option("--workers", type=click.IntRange(min=1), default=1, help="Runs at once (local/ray).")
@click.option("--gpus-per-run", type=float, default=None, help="Ray: GPUs each task asks for (default: --nproc-per-node on a cluster with GPUs).")
@click.option("--cpus-per-run", type=float, default=1, show_default=True, help="Ray: CPUs each task asks for.")
@click.option("--timeout", type=float, default=None, help="Seconds one run may take; then it is a failed row.")
def run_command(grid, out_dir, executor, nproc_per_node, ray_address, workers, gpus_per_run, cpus_per_run,
                timeout) -> None:
    """Run every grid point as an ordinary `llmctl pretrain` run; completed points are skipped on a rerun.

    \b
    Example:
      llmctl scaling run grid.yaml --out-dir sweeps/s1
      llmctl scaling run grid.yaml --out-dir sweeps/s1 --executor torchrun --nproc-per-node 8
      llmctl scaling run grid.yaml --out-dir sweeps/s1 --executor ray --ray-address auto --nproc-per-node 8
    """
    import sys

    from .sweep import run_grid

    rows = run_grid(grid, out_dir, executor=executor, nproc_per_node=nproc_per_node, ray_address=ray_address,
                    workers=workers, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, timeout=timeout,
                    echo=lambda line: click.echo(line, err=True))
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        click.echo(f"error: {len(failed)} of {len(rows)} runs failed: "
                   + "; ".join(f"{r['name']}: {r.get('error')}" for r in failed[:3]), err=True)
        sys.exit(1)


@scaling_group.command("fit")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--law", type=click.Choice(["chinchilla"]), default="chinchilla", show_default=True)
@click.option("--method", type=click.Choice(["approach3", "approach2"]), default="approach3", show_default=True)
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the intervals (each refitted to convergence).")
@click.option("--loss", type=click.Choice(["val", "train"]), default="val", show_default=True,
              help="Which loss of a sweep's runs (a CSV gives its own 'loss').")
@click.option("--benchmark", "benchmarks", multiple=True, metavar="NAME",
              help="Also fit NAME's accuracy as a sigmoid of loss (runs with eval results; repeatable).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where fit.json and the plots go (default: the sweep dir, or beside the CSV).")
@click.option("--no-plots", is_flag=True, help="Skip the PNGs.")
def fit_command(source, law, method, n_bootstrap, loss, benchmarks, seed, out_dir, no_plots) -> None:
    """Fit the scaling law to a sweep (its runs.jsonl) or a CSV/JSONL with columns params, tokens, loss.

    \b
    Example:
      llmctl scaling fit sweeps/s1 --bootstrap 1000
      llmctl scaling fit chinchilla_data.csv --out-dir fits/chinchilla
      llmctl scaling fit sweeps/s1 --benchmark mmlu --method approach2
    """
    from llmctl.core.io import write_json_atomic
    from llmctl.core.progress import progress

    from .fitting import fit_runs, summary
    from .runs import read_runs

    runs = read_runs(source, loss=loss, benchmarks=tuple(benchmarks))
    kind = flops = None
    if source.is_dir() and (source / "grid.yaml").is_file():
        from llmctl.core.config import load_yaml

        grid = load_yaml(source / "grid.yaml")
        kind, flops = grid.get("params", "non-embedding"), grid.get("flops", "6nd")
    bar = progress(total=n_bootstrap, desc="bootstrap", unit="fits") if n_bootstrap else None
    try:
        doc = fit_runs(runs, method=method, law=law, n_bootstrap=n_bootstrap, seed=seed,
                       benchmarks=tuple(benchmarks), params_kind=kind, flops_model=flops,
                       progress=(lambda i: bar.update(1)) if bar else None)
    finally:
        if bar:
            bar.close()
    out = out_dir or (source if source.is_dir() else source.parent)
    pictures = [] if no_plots else _plots(runs, doc, out)
    path = Path(out) / "fit.json"
    write_json_atomic(path, doc)
    click.echo(summary(doc))
    click.echo(f"fit: {path}" + (f"; plots: {', '.join(str(p) for p in pictures)}" if pictures else ""))


def _plots(runs, doc, out: Path) -> list[Path]:
    import numpy as np

    from .benchmark_fit import BenchmarkFit
    from .chinchilla import LawFit
    from .isoflop import IsoFlopFit
    from .plots import plot_benchmark, plot_contours, plot_isoflop, plot_residuals
    from .runs import best_per_shape

    law = LawFit.from_dict(doc["approach3"]["fit"]) if doc.get("approach3") else None
    iso = IsoFlopFit.from_dict(doc["approach2"]) if doc.get("approach2") else None
    out = Path(out)
    pictures = [plot_isoflop(runs, law, iso, out / "isoflop.png")]
    if law is not None:
        sub = runs.select(best_per_shape(runs))  # the runs the law was fitted to
        pictures.append(plot_contours(sub, law, out / "contours.png"))
        pictures.append(plot_residuals(sub, np.array(doc["approach3"]["residuals"]), out / "residuals.png"))
    for name, b in doc["benchmarks"].items():
        have = np.isfinite(runs.benchmarks[name])
        pictures.append(plot_benchmark(runs.loss[have], runs.benchmarks[name][have], BenchmarkFit.from_dict(b),
                                       out / f"benchmark_{name}.png"))
    return pictures


@scaling_group.command("predict")
@click.argument("fit_file", type=click.Path(path_type=Path))
@click.option("--params", "n", type=float, default=None, help="Model size N (the fit's kind of N).")
@click.option("--tokens", "d", type=float, default=None, help="Training tokens D.")
@click.option("--budget", type=float, default=None, help="Training FLOPs: the compute-optimal N and D.")
@click.option("--target-loss", type=float, default=None, help="The compute-optimal run reaching this loss.")
@click.option("--gpus", type=click.IntRange(min=1), default=None, help="Devices for the run.")
@click.option("--days", type=float, default=None, help="Wall-clock days for the run.")
@click.option("--tokens-per-s-per-gpu", type=float, default=None, help="Measured training throughput per device.")
@click.option("--throughput-log", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A measured run's log (llmctl JSONL or Megatron/MindSpeed), read as `llmctl bench throughput`.")
@click.option("--log-gpus", type=click.IntRange(min=1), default=1, show_default=True,
              help="Devices the --throughput-log run used.")
@click.option("--measured-params", type=float, default=None,
              help="N of the model the throughput was measured on (default: it is the model to be trained).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def predict_command(fit_file, n, d, budget, target_loss, gpus, days, tokens_per_s_per_gpu, throughput_log, log_gpus,
                    measured_params, as_json) -> None:
    """Predict from fit.json: loss at (N, D), or the compute-optimal run of a budget, a loss or a cluster.

    \b
    Example:
      llmctl scaling predict fit.json --params 7e9 --tokens 2e12
      llmctl scaling predict fit.json --budget 5.76e23
      llmctl scaling predict fit.json --gpus 64 --days 30 --tokens-per-s-per-gpu 3000 --measured-params 5e8
      llmctl scaling predict fit.json --gpus 8 --days 7 --throughput-log logs/zen.log --log-gpus 8 \\
          --measured-params 4.4e8
      llmctl scaling predict fit.json --target-loss 2.5
    """
    from .predict import (benchmark_predictions, budget_for_loss, hardware_budget, hparam_predictions, load_fit,
                          loss_at, optimal)

    doc = load_fit(fit_file)
    hardware = gpus is not None or days is not None or tokens_per_s_per_gpu is not None or throughput_log
    modes = sum([n is not None and d is not None and not hardware, budget is not None, target_loss is not None,
                 bool(hardware)])
    if modes != 1:
        raise UserError("give exactly one of: --params with --tokens, --budget, --target-loss, or "
                        "--gpus/--days with --tokens-per-s-per-gpu or --throughput-log")
    for flag, value in (("--params", n), ("--tokens", d), ("--budget", budget), ("--days", days),
                        ("--tokens-per-s-per-gpu", tokens_per_s_per_gpu), ("--measured-params", measured_params)):
        if value is not None and not value > 0:
            raise UserError(f"{flag} must be > 0, got {value}")
    if hardware:
        if gpus is None or days is None:
            raise UserError("a hardware budget needs --gpus and --days")
        if (tokens_per_s_per_gpu is None) == (throughput_log is None):
            raise UserError("give one of --tokens-per-s-per-gpu and --throughput-log")
        if throughput_log is not None:
            from llmctl.core.plot import read_log, throughput

            _, total = throughput(read_log(throughput_log))
            if not total:
                raise UserError(f"{throughput_log}: no throughput (tokens per step unknown)")
            tokens_per_s_per_gpu = total / log_gpus
        budget = hardware_budget(doc, gpus, days, tokens_per_s_per_gpu, measured_params)
        if d is not None:
            if not measured_params:
                raise UserError("--tokens with a hardware budget needs --measured-params (the throughput's model)")
            n = budget / (6 * d)
            budget = None
    if target_loss is not None:
        budget = budget_for_loss(doc, target_loss)
    result = optimal(doc, budget) if budget is not None else loss_at(doc, n, d)
    if hardware:
        result["hardware"] = {"gpus": gpus, "days": days, "tokens_per_s_per_gpu": tokens_per_s_per_gpu,
                              "measured_params": measured_params}
    if target_loss is not None:
        result["target_loss"] = target_loss
    samples = result.pop("loss_samples", None)
    if "loss" in result and doc.get("benchmarks"):
        result["benchmarks"] = benchmark_predictions(doc, samples, result["loss"])
    c = result.get("budget") or result.get("flops")
    if doc.get("hparams"):
        result["hparams"] = hparam_predictions(doc, c)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(_predict_text(result))


def _predict_text(r: dict) -> str:
    def ci(key: str) -> str:
        iv = r.get(f"{key}_interval")
        return f"  [{iv[0]:.4g}, {iv[1]:.4g}]" if iv else ""

    lines = []
    if "hardware" in r:
        h = r["hardware"]
        lines.append(f"hardware: {h['gpus']} devices x {h['days']:g} days at {h['tokens_per_s_per_gpu']:.4g} "
                     f"tokens/s each" + (f" (measured on N = {h['measured_params']:.3g})"
                                         if h["measured_params"] else " (the model's own rate)"))
    if "target_loss" in r:
        lines.append(f"target loss {r['target_loss']}")
    if "budget" in r:
        lines.append(f"budget C = {r['budget']:.4g} FLOPs ({r['method']})")
    else:
        lines.append(f"C = 6 N D = {r['flops']:.4g} FLOPs")
    lines.append(f"params N = {r['params']:.4g}{ci('params')}")
    lines.append(f"tokens D = {r['tokens']:.4g}{ci('tokens')}  (D/N = {r['tokens'] / r['params']:.1f})")
    if "loss" in r:
        lines.append(f"loss     = {r['loss']:.4f}{ci('loss')}")
    for name, b in (r.get("benchmarks") or {}).items():
        lines.append(f"{name} accuracy = {b['accuracy']:.4f}  [{b['interval'][0]:.4f}, {b['interval'][1]:.4f}]")
    for key, value in (r.get("hparams") or {}).items():
        lines.append(f"optimal {key} = {value:.4g}")
    return "\n".join(lines)
