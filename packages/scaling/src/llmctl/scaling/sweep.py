"""`llmctl scaling run`: every grid point is an ordinary `llmctl pretrain` run, launched on an existing engine.

Each point gets `OUT/NAME/` (config.yaml, checkpoints/, logs/run.jsonl + run.log, train.out, eval/) and is run as
`llmctl pretrain -c OUT/NAME/config.yaml --resume auto` — in this process's stead one after another (`local`),
under torchrun (`torchrun`: `--nproc-per-node N`), or as one Ray task per run asking for the GPUs it needs
(`ray`, the executor the data stages use, from the plugin bus; `--ray-address` joins a cluster). A finished
point leaves `OUT/_done/NAME.json` (its row and a fingerprint of its config), so a rerun skips it; an interrupted
one resumes from its last checkpoint through `--resume auto`; a failed one is a row with status "failed" and the
error's last line, never a hole. `OUT/runs.jsonl` is rewritten atomically after every finished run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from llmctl.core.config import dump_yaml
from llmctl.core.errors import UserError
from llmctl.core.io import write_json_atomic, write_text_atomic

from .grid import Point, read_grid, resolve_points

EXECUTORS = ("local", "torchrun", "ray")
MARKER_DIR = "_done"
RUNS_FILE = "runs.jsonl"


def fingerprint(config: dict[str, Any], eval_spec: dict | None) -> str:
    return hashlib.sha256(json.dumps([config, eval_spec], sort_keys=True, default=str).encode()).hexdigest()[:16]


def point_spec(point: Point, out: Path, eval_spec: dict | None, nproc: int | None,
               timeout: float | None) -> dict[str, Any]:
    """What one run needs, as plain data (it travels to a Ray worker): its config with the run dir's paths."""
    run_dir = out / point.name
    config = json.loads(json.dumps(point.config))
    config["checkpoint"].update({"dir": str(run_dir / "checkpoints"), "resume": None})
    config["logging"].update({"dir": str(run_dir / "logs"), "name": "run"})
    info = {"name": point.name, "budget": point.budget, "params": point.params,
            "params_total": point.params_total, "params_non_embedding": point.params_non_embedding,
            "tokens": point.tokens, "flops": point.flops, "iters": point.iters, "lr": point.lr,
            "global_batch_size": point.global_batch_size, "seq_length": config["data"]["seq_length"],
            "num_layers": config["model"]["num_layers"], "hidden_size": config["model"]["hidden_size"],
            "num_heads": config["model"]["num_heads"]}
    return {"info": info, "run_dir": str(run_dir), "config": config, "eval": eval_spec, "nproc": nproc,
            "timeout": timeout, "marker": str(out / MARKER_DIR / f"{point.name}.json"),
            "fingerprint": fingerprint(config, eval_spec)}


def read_marker(spec: dict[str, Any]) -> dict[str, Any] | None:
    try:
        marker = json.loads(Path(spec["marker"]).read_text())
    except (OSError, ValueError):
        return None
    return marker.get("row") if marker.get("fingerprint") == spec["fingerprint"] else None


def _llmctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmctl.cli", *args]


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [""])[-1][:500]


def _call(cmd: list[str], log: Path, timeout: float | None) -> int:
    """Run `cmd` with its output appended to `log`; past `timeout` it is terminated (torchrun passes it on)."""
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out.write(f"error: timed out after {timeout:g} s\n")
            return 124
        except BaseException:
            proc.kill()
            proc.wait()
            raise


def final_losses(log: Path) -> dict[str, Any]:
    """The last step, train loss and validation loss of a run's metrics, read as `llmctl plot` reads them."""
    from llmctl.core.plot import read_log

    out: dict[str, Any] = {"steps": None, "train_loss": None, "val_loss": None, "consumed_tokens": None}
    if not log.is_file():
        return out
    curve = read_log(log)
    out.update(steps=curve.step[-1], train_loss=curve.loss[-1], consumed_tokens=curve.tokens[-1])
    if curve.val_loss:
        out.update(val_loss=curve.val_loss[-1], val_step=curve.val_step[-1])
    return out


def _evaluate(spec: dict[str, Any], run_dir: Path, log: Path) -> dict[str, float]:
    ev = spec["eval"]
    tasks = ev["tasks"] if isinstance(ev["tasks"], list) else str(ev["tasks"]).split(",")
    args = ["eval", "run", "--task", ",".join(tasks), "--ckpt-dir", str(run_dir / "checkpoints"),
            "--out-dir", str(run_dir / "eval")]
    data = ev.get("data_dir") or {}
    for task, path in (data.items() if isinstance(data, dict) else [(None, data)]):
        args += ["--data-dir", f"{task}={path}" if task else str(path)]
    args += [str(a) for a in ev.get("args") or []]
    code = _call(_llmctl(*args), log, spec["timeout"])
    if code:
        raise RuntimeError(f"eval exited with code {code}: {_last_line(log)}")
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    return {t: r["metrics"].get("acc", r["metrics"].get("ppl")) for t, r in results["tasks"].items()}


def run_point(spec: dict[str, Any]) -> dict[str, Any]:
    """One run, wherever the executor placed it: train (resuming), evaluate, then the marker. Never raises for
    a failed run: the row says so."""
    run_dir = Path(spec["run_dir"])
    row = {**spec["info"], "status": "failed", "run_dir": str(run_dir)}
    t0 = time.perf_counter()
    config_file = run_dir / "config.yaml"
    stamp = run_dir / "fingerprint.txt"
    if run_dir.exists() and not stamp.is_file() and any(run_dir.iterdir()):
        return {**row, "error": f"{run_dir} exists and was not made by `llmctl scaling run`: move it away"}
    if stamp.is_file() and stamp.read_text().strip() != spec["fingerprint"]:
        shutil.rmtree(run_dir)  # left by a point of another config: its checkpoints must not be resumed
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config_file, dump_yaml(spec["config"]))
    write_text_atomic(stamp, spec["fingerprint"] + "\n")
    log = run_dir / "train.out"
    cmd = _llmctl("pretrain", "-c", str(config_file), "--resume", "auto")
    if spec["nproc"]:
        cmd += ["--nproc-per-node", str(spec["nproc"])]
    try:
        code = _call(cmd, log, spec["timeout"])
        if code:
            return {**row, "error": f"pretrain exited with code {code}: {_last_line(log)}"}
        row.update(final_losses(run_dir / "logs" / "run.jsonl"))
        if row["train_loss"] is None:
            return {**row, "error": f"no training loss in {run_dir / 'logs' / 'run.jsonl'}"}
        if spec["eval"]:
            row["eval"] = _evaluate(spec, run_dir, log)
    except Exception as e:  # noqa: BLE001 - a failed run is a row, not a crash of the sweep
        return {**row, "error": f"{type(e).__name__}: {e}"}
    row.update(status="ok", seconds=round(time.perf_counter() - t0, 2))
    write_json_atomic(Path(spec["marker"]), {"fingerprint": spec["fingerprint"], "row": row})
    return row


def write_runs(out: Path, rows: list[dict[str, Any]]) -> Path:
    path = out / RUNS_FILE
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return path


def _executor(name: str, workers: int, ray_address: str | None):
    from llmctl.core.plugins import lookup

    try:
        factory = lookup("executors", "local" if name == "torchrun" else name)
    except UserError as e:
        raise UserError(f"--executor {name}: {e} (the executors come with llmctl-data: pip install llmctl-data)") \
            from None
    options: dict[str, Any] = {"workers": workers}
    if name == "ray":
        options["address"] = ray_address
    return factory(**options)


def _cluster_gpus(ex) -> float:
    ray = getattr(ex, "_ray", None)
    return float(ray.cluster_resources().get("GPU", 0)) if ray is not None else 0.0


def run_grid(grid_path: str | Path, out: str | Path, *, executor: str = "local", nproc_per_node: int | None = None,
             ray_address: str | None = None, workers: int = 1, gpus_per_run: float | None = None,
             cpus_per_run: float = 1, timeout: float | None = None,
             echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every point not already done; return the rows in grid order (also in OUT/runs.jsonl)."""
    if executor not in EXECUTORS:
        raise UserError(f"--executor '{executor}' is not one of {', '.join(EXECUTORS)}")
    if executor == "torchrun" and not nproc_per_node:
        raise UserError("--executor torchrun needs --nproc-per-node N")
    grid = read_grid(grid_path)
    points = resolve_points(grid, str(grid_path))  # every point checked before anything is written
    out = Path(out)
    nproc = nproc_per_node if executor in ("torchrun", "ray") else None
    specs = [point_spec(p, out, grid.get("eval"), nproc, timeout) for p in points]
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "grid.yaml", dump_yaml(grid))
    done = {s["info"]["name"]: row for s in specs if (row := read_marker(s)) is not None}
    pending = [s for s in specs if s["info"]["name"] not in done]
    echo(f"scaling run: {len(specs)} points, {len(done)} already done, {len(pending)} to run ({executor})")
    rows = dict(done)
    if pending:
        if executor == "ray" or workers > 1:
            ex = _executor(executor, workers, ray_address)
            resources: dict[str, Any] = {"num_cpus": cpus_per_run}
            if gpus_per_run is not None:
                resources["num_gpus"] = gpus_per_run
            elif executor == "ray" and nproc and _cluster_gpus(ex):
                resources["num_gpus"] = nproc  # one GPU per process of the run (a CPU cluster: none asked)
            for row in ex.map(run_point, [(s,) for s in pending], "scaling run", resources):
                rows[row["name"]] = row
                echo(_row_line(row, len(rows), len(specs)))
        else:  # one after another here: each row is reported and saved as soon as its run ends
            for spec in pending:
                echo(f"[{len(rows) + 1}/{len(specs)}] {spec['info']['name']}: training "
                     f"(N={spec['info']['params']:.3g}, D={spec['info']['tokens']:.3g}) -> {spec['run_dir']}")
                row = run_point(spec)
                rows[row["name"]] = row
                echo(_row_line(row, len(rows), len(specs)))
                write_runs(out, [rows[s["info"]["name"]] for s in specs if s["info"]["name"] in rows])
    ordered = [rows[s["info"]["name"]] for s in specs]
    path = write_runs(out, ordered)
    failed = [r for r in ordered if r["status"] != "ok"]
    echo(f"runs: {path} ({len(ordered) - len(failed)} ok, {len(failed)} failed)")
    return ordered


def _row_line(row: dict[str, Any], i: int, n: int) -> str:
    if row["status"] != "ok":
        return f"[{i}/{n}] {row['name']}: FAILED: {row.get('error')}"
    val = f", val loss {row['val_loss']:.4f}" if row.get("val_loss") is not None else ""
    return f"[{i}/{n}] {row['name']}: train loss {row['train_loss']:.4f}{val} ({row.get('seconds', 0):.1f} s)"
