"""Pretraining in stages: the run as a list of config overlays, each applied by the driver at a step boundary
(warmup → stable on the web mix → long context with a larger RoPE base → anneal on a high-quality blend).

    stages:
      - {name: stable, tokens: 2.0e9, schedule: constant}
      - {name: long, iters: 500, blend: data/long/blend.yaml, seq_length: 16384, rope_theta: 1.0e6}
      - {name: anneal, iters: 300, blend: "0.7 data/hq 0.3 data/sft_like", schedule: wsd, decay_fraction: 1.0,
         decay_style: 1-sqrt, min_lr: 0}

Each stage has a name, a length (`iters`, or `tokens` at its own tokens per step), its own LR segment (lr,
min_lr, schedule, warmup, decay_fraction, decay_style), data blend (any `data.path` form: prefixes and weights,
or a `llmctl data mix` blend.yaml), seq_length, rope_theta / rope_scaling and micro/global batch. The keys
outside `stages:` are the defaults every stage overrides; the top-level warmup is the run's (the first stage's):
a later stage warms up only when it sets warmup_iters/warmup_fraction itself, from the LR the previous stage
ended at. A config without `stages:` is one stage spanning the run, so the driver has one path.

A branch (`llmctl pretrain --from CKPT --stage anneal`, `branch:` in the config) starts one stage from a
checkpoint of an earlier one: the stages before it run up to the checkpoint's iteration (their LR curves
unchanged), the branch stage follows; stages in between are dropped.

Torch-free: the plan is arithmetic over the config, so config errors, `--print-config` and `llmctl eval run`
(which RoPE base and sequence length a checkpoint was trained at) need no torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import did_you_mean
from ..errors import UserError
from .schedule import DECAY_STYLES, lr_at

if TYPE_CHECKING:
    from ..model_config import ModelConfig
    from .config import TrainConfig

SCHEDULES = ("cosine", "linear", "constant", "wsd")
POINTER = "latest_checkpointed_iteration.txt"


@dataclasses.dataclass
class CurriculumConfig:
    """Order inside a stage (llmctl-data's curriculum.py): each source's samples by the length of the documents
    they hold, or by their score (`<prefix>.scores.npy`, one per document), ascending or descending; with
    `buckets`, N equal buckets in that order, shuffled inside (seeded). Deterministic, so resumable."""

    by: str = "length"  # length | score
    order: str = "ascending"  # ascending | descending
    buckets: int | None = None

    def validate(self) -> None:
        for key, value, choices in (("by", self.by, ("length", "score")),
                                    ("order", self.order, ("ascending", "descending"))):
            if value not in choices:
                raise UserError(f"config key 'stages[].curriculum.{key}': '{value}' is not one of "
                                f"{', '.join(choices)}{did_you_mean(str(value), choices)}")
        if self.buckets is not None and self.buckets < 1:
            raise UserError(f"config key 'stages[].curriculum.buckets' must be >= 1, got {self.buckets}")


@dataclasses.dataclass
class StageConfig:
    """One entry of `stages:`; None = the default from the sections outside `stages:`."""

    name: str | None = None
    iters: int | None = None  # exactly one of iters / tokens
    tokens: int | None = None  # at this stage's tokens per step (rounded up to whole iterations)
    blend: str | list | dict | None = None  # data.path for this stage (any blend form, or a blend.yaml)
    seq_length: int | None = None
    rope_theta: float | None = None
    rope_scaling: dict | None = None  # {rope_type: llama3, factor: ..}; {} = none
    micro_batch_size: int | None = None
    global_batch_size: int | None = None
    tokens_per_step: int | None = None
    lr: float | None = None  # the segment's peak (start) LR
    min_lr: float | None = None  # where its decay ends
    schedule: str | None = None
    warmup_iters: int | None = None
    warmup_fraction: float | None = None
    decay_fraction: float | None = None
    decay_style: str | None = None
    curriculum: CurriculumConfig | None = None  # order inside the stage (default: the dataset's shuffle)

    def validate(self) -> None:
        if self.iters is not None and self.tokens is not None:
            raise UserError(f"config: stage '{self.name}' sets both 'iters' and 'tokens'; set one")


@dataclasses.dataclass
class BranchConfig:
    """`llmctl pretrain --from CKPT --stage NAME`: start stage NAME from checkpoint CKPT (full state: weights,
    optimizer, data positions) in a new run dir; recorded in every checkpoint of the branch."""

    checkpoint: str | None = None  # an iter_N dir, or a checkpoint dir (its latest iteration)
    stage: str | None = None
    iteration: int | None = None  # resolved from `checkpoint` when the config is loaded
    origin_run: str | None = None  # the origin's run name (its config.yaml), for the logs


@dataclasses.dataclass(frozen=True)
class Stage:
    index: int  # position in the plan
    name: str
    start: int  # iterations done before it: it trains iterations start+1 .. end
    end: int
    length: int  # declared iterations (the LR curve's length; > end - start for a stage a branch cut short)
    blend: Any
    seq_length: int
    micro_batch_size: int
    global_batch_size: int
    model: "ModelConfig"  # the model as this stage trains it (rope_theta, rope_scaling, max_seq_len)
    lr: float
    min_lr: float
    schedule: str
    warmup: int
    decay_fraction: float
    decay_style: str
    warmup_init: float  # the LR the previous stage ended at (0 for the first)
    curriculum: dict | None = None

    @property
    def iters(self) -> int:
        return self.end - self.start

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_length

    @property
    def data_key(self) -> str:
        """Which dataset the stage reads: stages with the same blend, sequence length and curriculum share
        one, and with it one data position."""
        return data_key(self.blend, self.seq_length, self.curriculum)

    def lr_at(self, i: int) -> float:
        """The LR of global iteration i (start < i; past `end` the segment's own continuation)."""
        return lr_at(i - self.start, lr=self.lr, min_lr=self.min_lr, total=self.length, warmup=self.warmup,
                     schedule=self.schedule, decay_fraction=self.decay_fraction, decay_style=self.decay_style,
                     warmup_init=self.warmup_init)


def data_key(blend: Any, seq_length: int, curriculum: dict | None = None) -> str:
    spec = blend if isinstance(blend, str) else json.dumps(blend, sort_keys=True, default=str)
    key = f"{str(spec).strip()} @ seq {seq_length}"
    return key + (f" @ curriculum {json.dumps(curriculum, sort_keys=True)}" if curriculum else "")


@dataclasses.dataclass(frozen=True)
class DataNeed:
    blend: Any
    seq_length: int
    curriculum: dict | None
    train_samples: int
    val_samples: int


class StagePlan:
    def __init__(self, stages: list[Stage], declared: list[Stage], explicit: bool):
        self.stages, self.declared, self.explicit = stages, declared, explicit

    @property
    def total(self) -> int:
        return self.stages[-1].end

    def stage_at(self, iteration: int) -> Stage:
        """The stage that trains `iteration` (1-based); the first for 0, the last past the end."""
        for stage in self.stages:
            if iteration <= stage.end:
                return stage
        return self.stages[-1]

    def lr_at(self, iteration: int) -> float:
        return self.stage_at(iteration).lr_at(iteration)

    def model_at(self, iteration: int) -> "ModelConfig":
        """The model as it is after `iteration` steps (what a checkpoint of that iteration holds)."""
        return self.stage_at(max(iteration, 1)).model

    @property
    def peak_lr(self) -> float:
        return max(max(s.lr, s.warmup_init) for s in self.stages)

    def data_needs(self, eval_iters: int) -> dict[str, DataNeed]:
        """Samples per dataset over the *declared* stages (so a branch reads the datasets of the run it
        branches from, position for position), in order of first use."""
        needs: dict[str, DataNeed] = {}
        for s in self.declared:
            old = needs.get(s.data_key)
            train = s.length * s.global_batch_size + (old.train_samples if old else 0)
            val = max(eval_iters * s.global_batch_size if eval_iters > 0 else 0, old.val_samples if old else 0)
            needs[s.data_key] = DataNeed(s.blend, s.seq_length, s.curriculum, train, val)
        return needs

    def describe(self, stage: Stage) -> str:
        theta = f"{stage.model.rope_theta:g}"
        scaling = f", rope_scaling {stage.model.rope_scaling}" if stage.model.rope_scaling else ""
        order = f", curriculum {stage.curriculum}" if stage.curriculum else ""
        return (f"iterations {stage.start + 1}-{stage.end}, seq_length {stage.seq_length}, global batch "
                f"{stage.global_batch_size} (micro {stage.micro_batch_size}), rope_theta {theta}{scaling}, lr "
                f"{stage.schedule} {stage.lr:g} -> {stage.min_lr:g} (warmup {stage.warmup}"
                + (f", decay {stage.decay_style}" if stage.schedule == "wsd" else "") + f"), data {stage.blend}"
                + order)


# ---- building the plan from a config ---------------------------------------------------------------------
def _empty_blend(blend: Any) -> bool:
    return blend is not None and not (str(blend).strip() if isinstance(blend, str) else blend)


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _resolve(cfg: "TrainConfig", i: int, sc: StageConfig, explicit: bool) -> dict[str, Any]:
    """One stage's values (overlay over the defaults), checked; its key names for the errors."""
    t, d, m = cfg.train, cfg.data, cfg.model
    where = (lambda k: f"stages[{i}].{k}") if explicit else (lambda k: {
        "seq_length": "data.seq_length", "blend": "data.path", "rope_theta": "model.rope_theta"}.get(k, f"train.{k}"))
    own = (lambda k: getattr(sc, k) is not None) if explicit else (lambda k: False)
    name = sc.name if explicit else "main"
    if explicit and not name:
        raise UserError(f"config key 'stages[{i}].name' is required: every stage has a name")
    seq = _pick(sc.seq_length, d.seq_length)
    if seq < 1:
        raise UserError(f"config key '{where('seq_length') if own('seq_length') else 'data.seq_length'}' "
                        f"must be >= 1, got {seq}")
    blend = _pick(sc.blend, d.path)
    if _empty_blend(sc.blend):
        raise UserError(f"config key 'stages[{i}].blend' is empty: give prefixes (and weights), e.g. "
                        "'0.7 data/web 0.3 data/code', or a `llmctl data mix` blend.yaml")
    theta = _pick(sc.rope_theta, m.rope_theta)
    if not theta > 0:
        raise UserError(f"config key '{where('rope_theta') if own('rope_theta') else 'model.rope_theta'}' "
                        f"must be > 0, got {theta}")
    scaling = m.rope_scaling if sc.rope_scaling is None else (sc.rope_scaling or None)
    max_len = m.max_seq_len
    if seq > max_len:
        factor = float((scaling or {}).get("factor") or 0)
        key = where("seq_length") if own("seq_length") else "data.seq_length"
        if not scaling:
            raise UserError(f"config key '{key}': {seq} exceeds model.max_seq_len {max_len} and the stage has no "
                            "rope_scaling; raise model.max_seq_len or set a rope_scaling")
        if seq > factor * max_len:
            raise UserError(f"config key '{key}': {seq} exceeds model.max_seq_len {max_len} x rope_scaling "
                            f"factor {factor:g}")
        max_len = seq
    model = dataclasses.replace(m, rope_theta=float(theta), rope_scaling=scaling, max_seq_len=max_len)
    model.validate()

    mbs = _pick(sc.micro_batch_size, t.micro_batch_size)
    if own("global_batch_size") and own("tokens_per_step"):
        raise UserError(f"config: stage '{name}' sets both 'global_batch_size' and 'tokens_per_step'; set one")
    if own("global_batch_size"):
        gbs, tps_key = sc.global_batch_size, None
    elif own("tokens_per_step"):
        gbs, tps_key = None, where("tokens_per_step")
        tps = sc.tokens_per_step
    elif t.global_batch_size is not None:
        gbs, tps_key = t.global_batch_size, None
    else:
        gbs, tps_key, tps = None, "train.tokens_per_step", t.tokens_per_step
    if gbs is None:
        if tps is None:
            raise UserError("config: set exactly one of 'train.global_batch_size' and 'train.tokens_per_step'")
        if tps % seq:
            raise UserError(f"config: {tps_key} {tps} is not divisible by the sequence length {seq}"
                            + (f" of stage '{name}'" if explicit else ""))
        gbs = tps // seq
    for key, value in (("micro_batch_size", mbs), ("global_batch_size", gbs)):
        if value < 1:
            raise UserError(f"config key '{where(key) if own(key) else 'train.' + key}' must be >= 1, got {value}")

    if own("iters") or own("tokens"):
        length = sc.iters if sc.iters is not None else math.ceil(sc.tokens / (gbs * seq))
        declared_tokens = sc.tokens if sc.tokens is not None else sc.iters * gbs * seq
        if length < 1:
            raise UserError(f"config key 'stages[{i}].{'iters' if sc.iters is not None else 'tokens'}' "
                            f"must be >= 1")
    elif explicit:
        raise UserError(f"config: stage '{name}' needs a length: 'iters' or 'tokens'")
    else:
        if (t.train_iters is None) == (t.train_tokens is None):
            raise UserError("config: set exactly one of 'train.train_iters' and 'train.train_tokens'")
        length = t.train_iters or math.ceil(t.train_tokens / (gbs * seq))
        declared_tokens = t.train_tokens
    schedule = _pick(sc.schedule, t.schedule)
    if schedule not in SCHEDULES:
        raise UserError(f"config key '{where('schedule')}': '{schedule}' is not one of {', '.join(SCHEDULES)}"
                        f"{did_you_mean(str(schedule), SCHEDULES)}")
    style = _pick(sc.decay_style, t.decay_style)
    if style not in DECAY_STYLES:
        raise UserError(f"config key '{where('decay_style')}': '{style}' is not one of {', '.join(DECAY_STYLES)}"
                        f"{did_you_mean(str(style), DECAY_STYLES)}")
    lr, min_lr = _pick(sc.lr, t.lr), _pick(sc.min_lr, t.min_lr)
    if min_lr > lr:
        raise UserError(f"config key '{where('min_lr')}' ({min_lr}) is above the stage's lr ({lr})")
    decay_fraction = _pick(sc.decay_fraction, t.decay_fraction)
    if not 0 <= decay_fraction <= 1:
        raise UserError(f"config key '{where('decay_fraction')}' must be in [0, 1], got {decay_fraction}")
    # the top-level warmup is the run's: the first stage's; a later stage warms up when it says so
    if own("warmup_iters"):
        warmup = sc.warmup_iters
    elif own("warmup_fraction"):
        warmup = round(sc.warmup_fraction * length)
    elif i == 0:
        warmup = t.warmup_iters if t.warmup_iters is not None else round(t.warmup_fraction * length)
    else:
        warmup = 0
    if warmup < 0:
        raise UserError(f"config key '{where('warmup_iters')}' must be >= 0, got {warmup}")
    return dict(name=name, length=length, declared_tokens=declared_tokens, blend=blend, seq_length=seq,
                micro_batch_size=mbs, global_batch_size=gbs, model=model, lr=lr, min_lr=min_lr,
                schedule=schedule, warmup=min(warmup, length), decay_fraction=decay_fraction, decay_style=style,
                curriculum=dataclasses.asdict(sc.curriculum) if sc.curriculum is not None else None)


def build_plan(cfg: "TrainConfig") -> StagePlan:
    """The stages of `cfg` (one for a config without `stages:`), checked: each a one-line UserError naming
    its key."""
    explicit = bool(cfg.stages)
    entries = cfg.stages if explicit else [StageConfig()]
    values, seen = [], {}
    for i, sc in enumerate(entries):
        v = _resolve(cfg, i, sc, explicit)
        if v["name"] in seen:
            raise UserError(f"config key 'stages[{i}].name': '{v['name']}' is already the name of "
                            f"stages[{seen[v['name']]}]; stage names must be unique")
        seen[v["name"]] = i
        values.append(v)
    t = cfg.train
    if explicit and t.train_iters is not None and t.train_tokens is not None:
        raise UserError("config: set at most one of 'train.train_iters' and 'train.train_tokens' next to stages")
    if explicit and t.train_iters is not None and sum(v["length"] for v in values) != t.train_iters:
        terms = " + ".join(f"{v['name']} {v['length']}" for v in values)
        raise UserError(f"config: the stages add up to {sum(v['length'] for v in values)} iterations ({terms}) "
                        f"but train.train_iters is {t.train_iters}")
    if explicit and t.train_tokens is not None and sum(v["declared_tokens"] for v in values) != t.train_tokens:
        terms = " + ".join(f"{v['name']} {v['declared_tokens']:g}" for v in values)
        raise UserError(f"config: the stages add up to {sum(v['declared_tokens'] for v in values):g} tokens "
                        f"({terms}) but train.train_tokens is {t.train_tokens:g}")
    declared = _chain(values, [(v["length"], v["length"]) for v in values])
    branch = cfg.branch
    if branch.stage is None and branch.checkpoint is None:
        return StagePlan(declared, declared, explicit)
    if branch.stage is None or branch.checkpoint is None:
        raise UserError("config: a branch needs both 'branch.checkpoint' (--from) and 'branch.stage' (--stage)")
    if branch.stage not in seen:
        raise UserError(f"--stage {branch.stage}: no such stage{did_you_mean(branch.stage, seen)}; stages: "
                        f"{', '.join(seen) if explicit else '(none: the config has no stages:)'}")
    n = branch.iteration if branch.iteration is not None else checkpoint_iteration(branch.checkpoint)
    target = declared[seen[branch.stage]]
    if n > target.start:
        raise UserError(f"--from {branch.checkpoint} is at iteration {n}, past the start of stage "
                        f"'{branch.stage}' (iteration {target.start + 1}): a branch starts a stage from a "
                        "checkpoint of an earlier one")
    kept = [(v, (min(s.end, n) - s.start, s.length)) for v, s in zip(values, declared) if s.start < n]
    chosen = kept + [(values[target.index], (target.length, target.length))]
    stages = _chain([v for v, _ in chosen], [span for _, span in chosen])
    return StagePlan(stages, declared, explicit)


def _chain(values: list[dict[str, Any]], spans: list[tuple[int, int]]) -> list[Stage]:
    """Stages laid end to end: (iterations run, declared length) each; each warms up from the LR the one
    before it ended at."""
    out: list[Stage] = []
    start = 0
    for index, (v, (run, length)) in enumerate(zip(values, spans)):
        prev = out[-1] if out else None
        fields = {k: v[k] for k in ("name", "blend", "seq_length", "micro_batch_size", "global_batch_size",
                                    "model", "lr", "min_lr", "schedule", "warmup", "decay_fraction",
                                    "decay_style", "curriculum")}
        out.append(Stage(index=index, start=start, end=start + run, length=length,
                         warmup_init=prev.lr_at(prev.end) if prev else 0.0, **fields))
        start += run
    return out


def checkpoint_iteration(path: str | Path) -> int:
    """The iteration of an `iter_N` dir, or a checkpoint dir's latest (its pointer file); torch-free."""
    p = Path(path)
    m = re.fullmatch(r"iter_(\d+)", p.name)
    if m and p.is_dir():
        return int(m.group(1))
    pointer = p / POINTER
    if pointer.is_file():
        text = pointer.read_text().strip()
        if text.isdigit():
            return int(text)
    raise UserError(f"--from {path}: not a checkpoint (neither an iter_N directory nor a directory with "
                    f"{POINTER})")


def origin_run_dir(path: str | Path) -> Path:
    """The checkpoint dir an `iter_N` dir (or the checkpoint dir itself) belongs to."""
    p = Path(path)
    return p.parent if re.fullmatch(r"iter_(\d+)", p.name) else p
