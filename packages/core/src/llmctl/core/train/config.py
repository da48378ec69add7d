"""The pretraining config: one YAML file of sections, loaded strictly (unknown keys are errors with a
"did you mean"), resolved once (model preset merged, batch sizes derived and checked) so the checkpoint can
store the complete, self-describing result. Torch-free, so `--help` and config errors need no torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from ..config import apply_overrides, did_you_mean, from_dict, load_yaml, to_dict
from ..errors import UserError
from ..model_config import ModelConfig, get_preset
from .schedule import DECAY_STYLES
from .stages import SCHEDULES, BranchConfig, StageConfig, StagePlan, build_plan, checkpoint_iteration, origin_run_dir

DTYPES = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "npu")
CHECKPOINT_FORMATS = ("native", "mcore")


def _choice(value: str, choices: Iterable[str], key: str) -> None:
    choices = list(choices)
    if value not in choices:
        raise UserError(f"config key '{key}': '{value}' is not one of {', '.join(choices)}"
                        f"{did_you_mean(str(value), choices)}")


@dataclasses.dataclass
class DataConfig:
    # A tokenized prefix (`llmctl data tokenize --output-prefix P`), a Megatron blend "0.7 P1 0.3 P2", or a
    # list of either form; the dataset plugin adds the _train / _val split suffix.
    path: str | list | None = None
    seq_length: int = 256
    tokenizer: str | None = None  # tokenizer dir; copied into every checkpoint so it is self-describing
    num_workers: int = 0
    dataset: str = "gpt"  # name in the plugin bus's "datasets" registry (llmctl-data registers "gpt")

    def validate(self) -> None:
        if self.seq_length < 1:
            raise UserError(f"config key 'data.seq_length' must be >= 1, got {self.seq_length}")
        if self.num_workers < 0:
            raise UserError(f"config key 'data.num_workers' must be >= 0, got {self.num_workers}")


@dataclasses.dataclass
class OptimConfig:
    # Length: exactly one of train_iters / train_tokens. Batch: global_batch_size or tokens_per_step
    # (= global_batch_size * seq_length, the course lab's TOKENS_PER_STEP); micro_batch_size per device.
    train_iters: int | None = None
    train_tokens: int | None = None
    global_batch_size: int | None = None
    tokens_per_step: int | None = None
    micro_batch_size: int = 1
    lr: float = 3e-4
    min_lr: float = 0.0
    schedule: str = "cosine"
    warmup_iters: int | None = None  # wins over warmup_fraction when set
    warmup_fraction: float = 0.01  # Megatron --lr-warmup-fraction
    decay_fraction: float = 0.2  # wsd: share of the run spent decaying to min_lr at the end
    decay_style: str = "linear"  # wsd's decay: linear | cosine | 1-sqrt
    weight_decay: float = 0.1
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    clip_grad: float = 1.0  # 0 = no clipping (the grad norm is still measured and logged)
    seed: int = 1234
    dtype: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast + dynamic loss scaling)
    compile: bool = False
    activation_checkpointing: bool = False
    device: str = "auto"
    kernels: dict = dataclasses.field(default_factory=dict)  # op -> backend, e.g. {attention: reference}
    exit_interval: int | None = None  # Megatron --exit-interval: save and stop when step % N == 0
    deterministic: bool = False  # torch.use_deterministic_algorithms, for bit-exact resume checks
    task: str = "pretrain"  # what is trained: a name in the plugin bus's "tasks" registry (its keys: `task:`)

    def validate(self) -> None:
        _choice(self.schedule, SCHEDULES, "train.schedule")
        _choice(self.dtype, DTYPES, "train.dtype")
        _choice(self.device, DEVICES, "train.device")
        _choice(self.decay_style, DECAY_STYLES, "train.decay_style")
        if self.train_iters is not None and self.train_tokens is not None:
            raise UserError("config: set exactly one of 'train.train_iters' and 'train.train_tokens'")
        if self.global_batch_size is not None and self.tokens_per_step is not None:
            raise UserError("config: set exactly one of 'train.global_batch_size' and 'train.tokens_per_step'")
        for key in ("train_iters", "train_tokens", "global_batch_size", "tokens_per_step", "micro_batch_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise UserError(f"config key 'train.{key}' must be >= 1, got {value}")
        if not 0 <= self.warmup_fraction <= 1 or not 0 <= self.decay_fraction <= 1:
            raise UserError("config keys 'train.warmup_fraction' and 'train.decay_fraction' must be in [0, 1]")
        if self.min_lr > self.lr:
            raise UserError(f"config key 'train.min_lr' ({self.min_lr}) is above 'train.lr' ({self.lr})")
        if len(self.betas) != 2:
            raise UserError(f"config key 'train.betas' must be two numbers, got {self.betas}")


@dataclasses.dataclass
class EvalConfig:
    interval: int = 0  # validate every N steps (0: only at the end)
    iters: int = 10  # global batches of the _val split per validation (0: no validation)
    # Held-out perplexity by domain, at every validation and at the end: {name: PREFIX (.bin/.idx) or text
    # (a .txt file or a folder of them, tokenized with data.tokenizer)}; `llmctl eval run --task ppl` on a
    # checkpoint reads the same sets and reports the same numbers (windows of the stage's seq_length + 1).
    sets: dict = dataclasses.field(default_factory=dict)
    set_tokens: int | None = None  # score the first N tokens of each set (None: all of it)

    def validate(self) -> None:
        for name, path in self.sets.items():
            if not isinstance(path, str) or not path.strip():
                raise UserError(f"config key 'eval.sets.{name}' must be a path (a .bin/.idx prefix or text)")
        if self.set_tokens is not None and self.set_tokens < 2:
            raise UserError(f"config key 'eval.set_tokens' must be >= 2, got {self.set_tokens}")


@dataclasses.dataclass
class CheckpointConfig:
    dir: str | None = None
    interval: int = 0  # save every N steps (0: only at the end); a run with a dir always saves at the end
    keep: int | None = None  # keep the last K iteration dirs
    resume: str | None = None  # "auto" (latest in dir, if any) or a checkpoint dir to continue from
    # Megatron's --load with --finetune: start from these weights only (HF dir, llmctl or megatron-core
    # checkpoint); optimizer, schedule and iteration start fresh. The model section must describe them.
    load: str | None = None
    load_iteration: int | None = None  # which iteration of `load` (default: its pointer file)
    # native: llmctl's files. mcore: the weights as a megatron-core checkpoint MindSpeed can continue from
    # (TP x PP shards below), llmctl's resume state beside them, so --resume auto works on either.
    format: str = "native"
    mcore_tp: int = 1
    mcore_pp: int = 1
    mcore_num_layer_list: str | None = None  # MindSpeed's --num-layer-list for mcore_pp > 1 (default: even)

    def validate(self) -> None:
        _choice(self.format, CHECKPOINT_FORMATS, "checkpoint.format")
        if self.interval and not self.dir:
            raise UserError("config key 'checkpoint.interval' is set but 'checkpoint.dir' is not")
        if self.resume == "auto" and not self.dir:
            raise UserError("config key 'checkpoint.resume: auto' needs 'checkpoint.dir'")


@dataclasses.dataclass
class LoggingConfig:
    interval: int = 10
    sinks: list[str] = dataclasses.field(default_factory=lambda: ["jsonl"])
    dir: str = "logs"
    name: str | None = None  # run name -> DIR/NAME.jsonl and DIR/NAME.log (default: checkpoint dir's name)

    def validate(self) -> None:
        if self.interval < 1:
            raise UserError(f"config key 'logging.interval' must be >= 1, got {self.interval}")


SPIKE_ACTIONS = ("warn", "skip", "rollback")
SPIKE_METHODS = ("zscore", "ratio")


@dataclasses.dataclass
class SpikeDirection:
    threshold: float = 0.0  # 0 = off. zscore: (loss - mean) / std beyond it; ratio: loss / mean (up) or mean / loss (down)
    action: str = "warn"  # warn (log only) | skip (drop the step's update) | rollback (last checkpoint, skip the data)

    def validate(self) -> None:
        _choice(self.action, SPIKE_ACTIONS, "guards.loss_spike.<up|down>.action")
        if self.threshold < 0:
            raise UserError(f"config key 'guards.loss_spike.<up|down>.threshold' must be >= 0, got {self.threshold}")


@dataclasses.dataclass
class LossSpikeConfig:
    # A step's training loss (and, with `channels`, each source's loss) against the last `window` accepted
    # steps: a jump up (bad data, divergence) or a drop down (dirty data is often abnormally easy: all
    # newlines, repeated text) beyond the direction's threshold. Windows restart at each stage boundary.
    method: str = "zscore"  # zscore | ratio
    window: int = 20
    min_history: int = 5  # accepted steps before the test applies
    channels: bool = True  # also each source's loss in a blend (Megatron's channel losses)
    up: SpikeDirection = dataclasses.field(default_factory=SpikeDirection)
    down: SpikeDirection = dataclasses.field(default_factory=SpikeDirection)
    # rollback: samples skipped past the bad step's batch (PaLM skipped ~200-500 batches), on top of every
    # sample read since the checkpoint
    skip_samples: int = 0

    def validate(self) -> None:
        _choice(self.method, SPIKE_METHODS, "guards.loss_spike.method")
        if self.window < 2 or self.min_history < 2 or self.skip_samples < 0:
            raise UserError("config keys 'guards.loss_spike.window' and 'min_history' must be >= 2 and "
                            "'skip_samples' >= 0")
        if self.method == "ratio" and any(0 < d.threshold <= 1 for d in (self.up, self.down)):
            raise UserError("config key 'guards.loss_spike.<up|down>.threshold': a ratio threshold must be > 1 "
                            "(up: loss / mean, down: mean / loss)")

    @property
    def enabled(self) -> bool:
        return self.up.threshold > 0 or self.down.threshold > 0


@dataclasses.dataclass
class GuardsConfig:
    # A step with a NaN/inf loss or grad norm, or a grad norm whose z-score over the last `window` good steps
    # exceeds `spike_zscore`, is skipped (no optimizer/scheduler step). After `max_consecutive` such steps in a
    # row the run rolls back to the last checkpoint and moves the data position past the bad batches.
    enabled: bool = True
    # 0 = only NaN/inf (the default: a fast-learning run has legitimate grad-norm jumps, and skipping them
    # can stall it); long runs opt in, e.g. 6.0 with a window of 100 as in the zen-500m preset.
    spike_zscore: float = 0.0
    window: int = 50
    min_history: int = 10  # good steps needed before the z-score test applies
    max_consecutive: int = 3
    max_rollbacks: int = 3  # then stop with an error: the data or the settings need a human
    loss_spike: LossSpikeConfig = dataclasses.field(default_factory=LossSpikeConfig)

    def validate(self) -> None:
        if self.max_consecutive < 1 or self.window < 2:
            raise UserError("config keys 'guards.max_consecutive' must be >= 1 and 'guards.window' >= 2")


@dataclasses.dataclass
class TrainConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)  # YAML: {preset: NAME} and/or fields
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
    guards: GuardsConfig = dataclasses.field(default_factory=GuardsConfig)
    # Plugin-owned sections: `task:` holds the keys of the task named by train.task, `parallel:` the
    # strategy (a name in the "parallelisms" registry; auto = ddp under torchrun, else single) and its keys.
    # Each plugin validates its own section (unknown keys fail with a did-you-mean there).
    task: dict = dataclasses.field(default_factory=dict)
    parallel: dict = dataclasses.field(default_factory=lambda: {"strategy": "auto"})
    # Pretraining in stages (stages.py): a list of overlays over the keys above, applied at step boundaries.
    stages: list[StageConfig] = dataclasses.field(default_factory=list)
    branch: BranchConfig = dataclasses.field(default_factory=BranchConfig)

    def validate(self) -> None:
        if self.stages:
            return  # each stage resolves its own length and batch (build_plan)
        t = self.train
        if (t.train_iters is None) == (t.train_tokens is None):
            raise UserError("config: set exactly one of 'train.train_iters' and 'train.train_tokens'")
        if (t.global_batch_size is None) == (t.tokens_per_step is None):
            raise UserError("config: set exactly one of 'train.global_batch_size' and 'train.tokens_per_step'")

    @property
    def staged(self) -> bool:
        return bool(self.stages) or self.branch.stage is not None or self.branch.checkpoint is not None

    def plan(self) -> StagePlan:
        """The run's stages (one for a config without `stages:`), checked (stages.build_plan)."""
        return build_plan(self)

    # ---- derived values (the loop reads these, never the raw either/or keys) -----------------------------
    # A run in stages starts with its first stage's values; the driver follows the plan from there.
    @property
    def global_batch_size(self) -> int:
        if self.staged:
            return self.plan().stages[0].global_batch_size
        return self.train.global_batch_size or self.train.tokens_per_step // self.data.seq_length

    @property
    def tokens_per_step(self) -> int:
        if self.staged:
            return self.plan().stages[0].tokens_per_step
        return self.global_batch_size * self.data.seq_length

    @property
    def train_iters(self) -> int:
        if self.staged:
            return self.plan().total
        return self.train.train_iters or math.ceil(self.train.train_tokens / self.tokens_per_step)

    @property
    def warmup_iters(self) -> int:
        if self.staged:
            return self.plan().stages[0].warmup
        if self.train.warmup_iters is not None:
            return min(self.train.warmup_iters, self.train_iters)
        return round(self.train.warmup_fraction * self.train_iters)

    def stage_config(self, stage) -> "TrainConfig":
        """This config as one stage sees it (data, batch, model overlaid; no stages): what a strategy's
        preflight checks for each stage (sequence divisible by CP, batches by DP)."""
        import copy

        c = copy.deepcopy(self)
        c.stages, c.branch = [], BranchConfig()
        c.data.path, c.data.seq_length = stage.blend, stage.seq_length
        c.train.micro_batch_size, c.train.global_batch_size = stage.micro_batch_size, stage.global_batch_size
        c.train.tokens_per_step = None
        c.train.train_iters, c.train.train_tokens = stage.iters or 1, None
        c.model = dataclasses.replace(stage.model)
        return c

    def grad_accum_steps(self, dp_size: int = 1) -> int:
        return self.global_batch_size // (self.train.micro_batch_size * dp_size)

    def run_name(self) -> str:
        if self.logging.name:
            return self.logging.name
        return Path(self.checkpoint.dir).name if self.checkpoint.dir else self.train.task

    @property
    def strategy(self) -> str:
        return str(self.parallel.get("strategy", "auto"))

    @property
    def tensor_parallel_size(self) -> int:
        return int(self.parallel.get("tp", 1) or 1)

    def pad_vocab(self) -> None:
        """Derive model.padded_vocab_size for this run's tensor-parallel size (Megatron's rule): called once
        the model section is final (after the tokenizer, or a finetuning task's base, set vocab_size)."""
        self.model.validate()
        self.model.padded_vocab_size = self.model.padded_for(self.tensor_parallel_size)

    def check(self, dp_size: int = 1) -> None:
        """Cross-section checks that need the whole config (batch divisibility, data present), for every
        stage. `dp_size` is the data-parallel size (the world size divided by the model-parallel sizes), not
        the world size."""
        t = self.train
        if not self.staged and t.tokens_per_step is not None and t.tokens_per_step % self.data.seq_length:
            raise UserError(f"config: train.tokens_per_step {t.tokens_per_step} is not divisible by "
                            f"data.seq_length {self.data.seq_length}")
        plan = self.plan()  # every stage's values checked, one line naming the key
        for stage in plan.stages:
            per_step = stage.micro_batch_size * dp_size
            if stage.global_batch_size % per_step:
                where = f" (stage '{stage.name}')" if plan.explicit else ""
                raise UserError(f"config: global batch size {stage.global_batch_size}{where} is not divisible by "
                                f"train.micro_batch_size {stage.micro_batch_size} x data-parallel size "
                                f"{dp_size}: gradient accumulation = GBS / (DP x MBS) must be a whole number")
        from ..plugins import lookup

        for sink in self.logging.sinks:
            lookup("loggers", sink)  # an unknown sink fails before any work, naming what exists


# ---- loading ---------------------------------------------------------------------------------------------
def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__package__).joinpath("presets").iterdir()
                  if p.name.endswith(".yaml"))


def _read_source(source: str | os.PathLike | dict) -> dict[str, Any]:
    if isinstance(source, dict):
        import copy

        return copy.deepcopy(source)
    path = Path(source)
    if path.is_file():
        return load_yaml(path)
    if str(source) in preset_names():
        with resources.as_file(resources.files(__package__).joinpath("presets", f"{source}.yaml")) as p:
            return load_yaml(p)
    hint = difflib.get_close_matches(str(source), preset_names(), n=1)
    raise UserError(f"config file not found: {source}" + (f" (did you mean preset '{hint[0]}'?)" if hint else "")
                    + f"; presets: {', '.join(preset_names())}")


def resolve_model_section(section: dict[str, Any]) -> ModelConfig:
    """{preset: tiny, hidden_size: 128} -> the ModelConfig, preset values overridden by the rest."""
    section = dict(section or {})
    preset = section.pop("preset", None)
    base = to_dict(get_preset(preset)) if preset else to_dict(ModelConfig())
    base.update(section)
    return from_dict(ModelConfig, base, prefix="model")


def load_train_config(source: str | os.PathLike | dict, overrides: Iterable[str] = (), *,
                      resolve_vocab: bool = True) -> TrainConfig:
    """Read a YAML file, a preset name (tiny, zen-500m) or a dict; apply `section.key=value` overrides; check.

    The model section (a preset plus overrides) becomes the complete ModelConfig. With `resolve_vocab` a
    tokenizer (data.tokenizer) sets the vocab size unless the config gives one; the torch-free supervisor
    skips that, its child does it."""
    data = apply_overrides(_read_source(source), overrides)
    for section in ("model", "task", "parallel"):
        if section in data and not isinstance(data[section], dict):
            raise UserError(f"config key '{section}' must be a mapping")
    model_section = data.pop("model", None) or {}
    given = model_section.pop("padded_vocab_size", None)  # derived: checked against the derivation below
    cfg = from_dict(TrainConfig, data)
    cfg.model = resolve_model_section(model_section)
    if resolve_vocab and cfg.data.tokenizer:
        from ..tokenizer import load_tokenizer

        n = load_tokenizer(cfg.data.tokenizer).vocab_size
        if "vocab_size" not in model_section:
            cfg.model.vocab_size = n
        elif cfg.model.vocab_size < n:
            raise UserError(f"config: model.vocab_size {cfg.model.vocab_size} is smaller than the "
                            f"tokenizer's {n} ({cfg.data.tokenizer})")
    cfg.pad_vocab()
    if cfg.branch.checkpoint is not None and cfg.branch.iteration is None:
        branch_defaults(cfg)  # once: a checkpoint of the branch records the resolved values
    if cfg.staged:
        cfg.plan()  # a bad stage is one line now, before any torch or model work
    if resolve_vocab and given is not None and given != cfg.model.padded_vocab_size:
        raise UserError(f"config: model.padded_vocab_size {given} is derived, not set: vocab_size "
                        f"{cfg.model.vocab_size} padded to a multiple of make_vocab_size_divisible_by "
                        f"{cfg.model.make_vocab_size_divisible_by} x parallel.tp {cfg.tensor_parallel_size} is "
                        f"{cfg.model.padded_vocab_size}; change make_vocab_size_divisible_by instead")
    return cfg


def branch_defaults(cfg: TrainConfig) -> None:
    """A branch (`--from CKPT --stage NAME`) runs in a new run dir: its iteration is resolved from the
    checkpoint, and a checkpoint dir or run name still equal to the origin's becomes
    `<origin>_<stage>_from_<N>` beside it, so branches from several checkpoints never collide."""
    b = cfg.branch
    if not Path(b.checkpoint).exists():
        raise UserError(f"--from {b.checkpoint}: no such checkpoint")
    b.iteration = checkpoint_iteration(b.checkpoint)
    origin = origin_run_dir(b.checkpoint)
    origin_cfg = {}
    saved = origin / f"iter_{b.iteration:07d}" / "config.yaml"
    if saved.is_file():
        origin_cfg = load_yaml(saved)
    origin_logging = origin_cfg.get("logging") or {}
    origin_name = origin_logging.get("name") or origin.name
    b.origin_run = b.origin_run or origin_name
    new = f"{origin.name}_{b.stage}_from_{b.iteration}"
    if cfg.checkpoint.dir is None or Path(cfg.checkpoint.dir).resolve() == origin.resolve():
        cfg.checkpoint.dir = str(origin.parent / new)
    if cfg.logging.name in (None, origin_name) or cfg.run_name() == origin_name:
        cfg.logging.name = Path(cfg.checkpoint.dir).name
