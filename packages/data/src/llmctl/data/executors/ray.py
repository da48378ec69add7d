"""The `ray` executor: one Ray task per shard (and one for a global step such as dedup's band join).

Ray is an optional extra (`pip install 'llmctl-data[ray]'`): this module imports it only when the executor is
built, and a missing Ray or an unreachable cluster is a one-line error. `--ray-address auto` joins the cluster
`ray start` began on this node, `HOST:PORT` a remote head; without an address (and no Ray already running in
this process) a local Ray is started for the command. Each task asks for the stage's `resources` (CPUs, memory),
so the cluster's scheduler packs shards onto nodes. Outputs go to the paths the stage names: on a multi-node
cluster those must be on a shared file system, as for a Slurm array.
"""

from __future__ import annotations

import socket
from typing import Any, Callable

from llmctl.core.errors import UserError

from .base import Executor

INSTALL = "executor 'ray' needs Ray: pip install 'llmctl-data[ray]'"


def _check_reachable(address: str) -> None:
    """Fail fast on HOST:PORT nobody listens on (ray.init would retry for a minute first)."""
    host, _, port = address.rpartition(":")
    if address.startswith("ray://") or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"--ray-address {address}: cannot reach a Ray cluster there ({e.strerror or e})") from None


def connect(address: str | None, num_cpus: int | None = None):
    """The `ray` module, initialised: an existing session, the cluster at `address`, or a new local one."""
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL) from None
    if ray.is_initialized():
        return ray
    if address and address != "local":
        _check_reachable(address)
    try:
        if address and address != "local":
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--ray-address {address or 'local'}: cannot connect to Ray ({first})") from None
    return ray


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, workers: int = 1, address: str | None = None, cpus_per_task: float | None = None,
                 memory_per_task: int | None = None, **_: Any):
        if cpus_per_task is not None and cpus_per_task <= 0:
            raise UserError(f"--ray-cpus-per-task must be > 0, got {cpus_per_task}")
        if memory_per_task is not None and memory_per_task <= 0:
            raise UserError(f"--ray-memory-per-task must be > 0, got {memory_per_task}")
        self.address = address
        self.workers = max(1, workers)
        self.cpus_per_task, self.memory_per_task = cpus_per_task, memory_per_task
        self._ray = connect(address, num_cpus=workers if workers > 1 else None)

    def map(self, fn: Callable[..., Any], calls: list[tuple], desc: str, resources: dict[str, Any]) -> list[Any]:
        ray = self._ray
        from llmctl.core.progress import progress

        opts = dict(resources)
        if self.cpus_per_task is not None:
            opts["num_cpus"] = self.cpus_per_task
        if self.memory_per_task is not None:
            opts["memory"] = self.memory_per_task  # bytes; Ray reserves it when placing the task
        remote = ray.remote(fn).options(max_retries=0, **opts)
        refs = [remote.remote(*args) for args in calls]
        bar = progress(total=len(refs), desc=f"{desc} (ray)", unit="shards")
        try:
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                try:
                    ray.get(ready)
                except ray.exceptions.RayTaskError as e:
                    for r in pending:
                        ray.cancel(r)
                    cause = getattr(e, "cause", None)
                    raise cause if isinstance(cause, Exception) else UserError(str(e).splitlines()[0]) from None
                bar.update(1)
        finally:
            bar.close()
        return ray.get(refs)
