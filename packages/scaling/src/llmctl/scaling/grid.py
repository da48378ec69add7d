"""The grid file: plain YAML a person can edit, one ordinary pretrain config per point.

    base: configs/tiny.yaml          # a pretrain config file or preset, as `llmctl pretrain -c` takes it
    set: [data.path=data/corpus]     # its --set overrides, applied to every point
    params: non-embedding            # which N the law uses (shapes.PARAM_KINDS)
    flops: 6nd                       # the FLOP model (shapes.FLOP_MODELS)
    eval: {tasks: [mmlu], data_dir: {mmlu: eval/mmlu}}   # optional: a benchmark after each run
    points:
      - name: C1e15-h512-l8
        budget: 1.0e15
        model: {hidden_size: 512, num_layers: 8, ...}    # overrides of the base's model section
        train: {train_iters: 1200, lr: 3.0e-4}           # and of its train section (any key of either)

`run` builds each point's config from these alone; the planned `params`, `tokens`, `flops` a point also carries
are there for the reader and are recomputed from the config. Loading checks every point before anything runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from llmctl.core.config import did_you_mean, load_yaml, to_dict
from llmctl.core.errors import UserError

from .shapes import FLOP_MODELS, PARAM_KINDS, check_shape, count_params, flops_per_token, params_non_embedding, \
    params_total

GRID_KEYS = ("base", "set", "params", "flops", "tp", "eval", "points")
POINT_KEYS = ("name", "budget", "model", "train", "data", "params", "params_total", "tokens", "flops")
POINT_SECTIONS = ("model", "train", "data")
EVAL_KEYS = ("tasks", "data_dir", "args")


@dataclasses.dataclass
class Point:
    """One run of the grid, resolved: its config (a dict `llmctl pretrain -c` reads) and what the law needs."""

    name: str
    budget: float | None
    config: dict[str, Any]
    params: int  # the grid's N kind
    params_total: int
    params_non_embedding: int
    iters: int
    tokens: int  # iters x global batch x seq_length: what the run will consume
    flops: float  # the grid's FLOP model x tokens
    lr: float
    global_batch_size: int


def _check_keys(section: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in section:
        if key not in allowed:
            raise UserError(f"{where}: unknown key '{key}'{did_you_mean(key, allowed)}; keys: {', '.join(allowed)}")


def read_grid(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"grid file not found: {path}")
    grid = load_yaml(path)
    if not isinstance(grid, dict):
        raise UserError(f"{path}: a grid is a mapping with 'base' and 'points'")
    _check_keys(grid, GRID_KEYS, str(path))
    if not grid.get("base"):
        raise UserError(f"{path}: key 'base' (the pretrain config every point starts from) is missing")
    if not isinstance(grid.get("points"), list) or not grid["points"]:
        raise UserError(f"{path}: key 'points' must be a non-empty list")
    if grid.get("params", "non-embedding") not in PARAM_KINDS:
        raise UserError(f"{path}: params '{grid['params']}' is not one of {', '.join(PARAM_KINDS)}")
    if grid.get("flops", "6nd") not in FLOP_MODELS:
        raise UserError(f"{path}: flops '{grid['flops']}' is not one of {', '.join(FLOP_MODELS)}")
    if grid.get("eval") is not None:
        if not isinstance(grid["eval"], dict) or not grid["eval"].get("tasks"):
            raise UserError(f"{path}: 'eval' must be a mapping with 'tasks' (e.g. [mmlu]) and 'data_dir'")
        _check_keys(grid["eval"], EVAL_KEYS, f"{path}: eval")
    return grid


def resolve_points(grid: dict[str, Any], where: str = "grid") -> list[Point]:
    """Every point's full config, checked (model shape, batch sizes, keys) before any run starts."""
    from llmctl.core.train.config import load_train_config

    kind = grid.get("params", "non-embedding")
    flop_model = grid.get("flops", "6nd")
    tp = int(grid.get("tp", 1) or 1)
    base_sets = [str(s) for s in (grid.get("set") or [])]
    base = load_train_config(grid["base"], base_sets)  # once: the tokenizer sets the vocab for every point
    seen: set[str] = set()
    points = []
    for i, raw in enumerate(grid["points"]):
        at = f"{where}: point {i + 1}"
        if not isinstance(raw, dict) or not raw.get("name"):
            raise UserError(f"{at}: each point is a mapping with a 'name'")
        at = f"{where}: point '{raw['name']}'"
        _check_keys(raw, POINT_KEYS, at)
        name = str(raw["name"])
        if name in seen or "/" in name or name.startswith("."):
            raise UserError(f"{at}: names must be unique and usable as a directory name")
        seen.add(name)
        sets = [f"model.vocab_size={base.model.vocab_size}"]
        for section in POINT_SECTIONS:
            values = raw.get(section) or {}
            if not isinstance(values, dict):
                raise UserError(f"{at}: '{section}' must be a mapping")
            sets += [f"{section}.{k}={_yaml_value(v)}" for k, v in values.items()]
        try:
            cfg = load_train_config(grid["base"], [*base_sets, *sets], resolve_vocab=False)
            check_shape(cfg.model, at, tp)
            cfg.train.validate()
            cfg.check(dp_size=1)
        except UserError as e:
            msg = str(e)
            raise UserError(msg if msg.startswith(at) else f"{at}: {msg}") from None
        budget = raw.get("budget")
        if budget is not None and not float(budget) > 0:
            raise UserError(f"{at}: budget must be a positive number of FLOPs, got {budget}")
        tokens = cfg.train_iters * cfg.tokens_per_step
        n_total, n_non_emb = params_total(cfg.model, tp), params_non_embedding(cfg.model)
        if min(n_total, n_non_emb) < 1:
            raise UserError(f"{at}: the model has no {kind} parameters")
        points.append(Point(
            name=name, budget=None if budget is None else float(budget), config=to_dict(cfg),
            params=count_params(cfg.model, kind, tp), params_total=n_total, params_non_embedding=n_non_emb,
            iters=cfg.train_iters, tokens=tokens, flops=flops_per_token(cfg.model, kind, flop_model, cfg.data.seq_length, tp) * tokens,
            lr=cfg.train.lr, global_batch_size=cfg.global_batch_size))
    return points


def _yaml_value(value: Any) -> str:
    """A value as `--set` parses it back (YAML flow style for lists and mappings)."""
    import yaml

    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)
