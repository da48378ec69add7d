"""Options and helpers every `llmctl data` command shares: one spelling and one meaning of --workers,
--executor, --ray-* and the shard flags, so each command's CLI stays a thin declaration over its stage."""

from __future__ import annotations

import click
from llmctl.core.errors import UserError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _ray_task_option(ctx, param, value):
    """--ray-cpus-per-task / --ray-memory-per-task land in ctx.meta, read by `_executor` (no command signature
    has to carry them)."""
    if value is not None:
        ctx.meta.setdefault("llmctl.ray_task", {})[param.name] = value
    return value


def _memory(value: str | None) -> int | None:
    """'2GB', '512MiB', '1e9' -> bytes (GB = 2^30, as everywhere in llmctl-data)."""
    if value is None:
        return None
    import re

    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMGT]i?B?)?\s*", str(value), re.IGNORECASE)
    if not m:
        raise UserError(f"--ray-memory-per-task {value}: expected bytes or a size such as 2GB")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(unit or " "))


def _executor_options(f):
    f = click.option(
        "--executor",
        "executor_name",
        default="local",
        show_default=True,
        help="Where shards run: 'local' (a pool of --workers processes) or 'ray' (Ray tasks; llmctl-data[ray]).",
    )(f)
    f = click.option(
        "--ray-address",
        default=None,
        help="--executor ray: 'auto' (the cluster `ray start` began here) or HOST:PORT; default: a local Ray.",
    )(f)
    f = click.option(
        "--ray-cpus-per-task",
        "cpus_per_task",
        type=float,
        default=None,
        expose_value=False,
        callback=_ray_task_option,
        help="--executor ray: CPUs each shard's task asks for (default 1).",
    )(f)
    f = click.option(
        "--ray-memory-per-task",
        "memory_per_task",
        default=None,
        expose_value=False,
        callback=_ray_task_option,
        help="--executor ray: memory each shard's task reserves, e.g. 4GB (Ray's scheduler packs by it).",
    )(f)
    return click.option(
        "--workers",
        type=int,
        default=1,
        show_default=True,
        help="Shards running at once (local processes; with ray, CPUs of a local Ray).",
    )(f)


def _executor(name: str, workers: int, ray_address: str | None):
    """The executor a command's shards run on (`--executor`, looked up on the plugin bus)."""
    from ..executors import get_executor

    task = dict(click.get_current_context().meta.get("llmctl.ray_task", {}))
    if ray_address and name != "ray":
        raise UserError("--ray-address needs --executor ray")
    if task and name != "ray":
        raise UserError("--ray-cpus-per-task/--ray-memory-per-task need --executor ray")
    if "memory_per_task" in task:
        task["memory_per_task"] = _memory(task["memory_per_task"])
    return get_executor(name, workers=workers, address=ray_address, **task)


def _shard_options(f):
    f = _executor_options(f)
    f = click.option(
        "--num-shards",
        type=int,
        default=None,
        help="Split the input into this many shards (default: --workers).",
    )(f)
    f = click.option(
        "--shard-index",
        type=int,
        default=None,
        help="Run only this shard (0-based) of --num-shards, e.g. $SLURM_ARRAY_TASK_ID.",
    )(f)
    return f


def _inputs_option(f):
    return click.option(
        "--input",
        "inputs",
        multiple=True,
        required=True,
        help="Input file(s) or directories (repeat or comma-separate): parquet, jsonl, json, csv, txt.",
    )(f)


def _text_key_option(f):
    return click.option(
        "--text-key",
        "--json-keys",
        "text_key",
        default=None,
        help="Column holding the text (default: 'text', else 'content').",
    )(f)


def _single_shard(shard_index: int | None, num_shards: int | None) -> tuple[int, int] | None:
    if shard_index is None:
        return None
    return shard_index, num_shards or 1


def _echo_resumed(report: dict) -> None:
    from ..executors import resumed_note

    runs = [report["run"]] if "run" in report else list(report.get("runs", []))
    note = resumed_note(runs)
    if note:
        click.echo(note, err=True)


def _auto_int(value: str) -> int:
    if value in (None, "", "auto"):
        return 0
    try:
        return int(value)
    except ValueError:
        raise UserError(f"expected an integer or 'auto', got '{value}'") from None
