"""Megatron-core / MindSpeed checkpoint files: find, safely load, and write the TP x PP shard grid.

    DIR/latest_checkpointed_iteration.txt                        "N" (or "release"), written last
    DIR/iter_{N:07d}/mp_rank_{tp:02d}[_{pp:03d}]/model_optim_rng.pt
        {"args": argparse.Namespace, "checkpoint_version": 3.0, "iteration": N, "model": state_dict}
        (virtual pipeline stages: "model0", "model1", ... instead of "model")
    DIR/iter_{N:07d}/tokenizer/                                  llmctl's addition, so generate/eval need only DIR

Files load with `weights_only=True` and exactly one extra class allowed, `argparse.Namespace`: a MindSpeed
file pickles its args as one. The numpy RNG state and Megatron enums a training save also pickles become inert
placeholders (`mcore_unpickle`), so such a file loads and its RNG state is ignored; anything else (an object
whose unpickling would run code) is refused with a one-line error before any of it runs. Only the `args`
fields the model needs are read.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import UserError
from ..io import atomic_dir, write_text_atomic
from ..model_config import ModelConfig
from ..pipeline_layers import parse_layer_list
from . import mcore
from .build import check_keys, fit_vocab_state, strip_wrappers
from .hf_adapters import ADAPTERS
from .mcore_unpickle import only_allowed_globals
from .checkpoint import POINTER, STATE_FILE, copy_tokenizer, iter_dir_name, rank_dir_name

CHECKPOINT_VERSION = 3.0
_RANK_RE = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?$")
_ITER_RE = re.compile(r"^(iter_\d{7}|release)$")


def load_rank_file(path: Path, mmap: bool = False) -> dict[str, Any]:
    """torch.load(weights_only=True) allowing argparse.Namespace (and inert stand-ins for numpy's RNG state);
    refusals/corruption are one line. `mmap` for a peek at the keys; a full read loads into memory, so
    gathered shards can be freed one by one."""
    try:
        with only_allowed_globals():
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError as e:
                if not mmap or "mmap" not in str(e):
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[0] if lines else "")
        named = re.search(r"GLOBAL (\S+)", why)
        why = f"it pickles {named.group(1)}" if named else why.removeprefix("WeightsUnpickler error: ")
        raise UserError(f"{path}: refused to load (only tensors, containers and argparse.Namespace are allowed: "
                        f"{why[:160]})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"{path}: corrupt or unreadable checkpoint ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a dict with 'model' and 'args', found {type(obj).__name__}")
    return obj


def resolve_iteration_dir(path: str | os.PathLike, iteration: int | None = None) -> Path:
    """A checkpoint root (pointer file, or `iteration`) or an `iter_NNNNNNN` / `release` directory."""
    path = Path(path)
    if _ITER_RE.match(path.name) and path.is_dir():
        return path
    if iteration is not None:
        it_dir = path / iter_dir_name(iteration)
    else:
        pointer = path / POINTER
        if not pointer.is_file():
            raise UserError(f"{path}: no {POINTER}; not a Megatron checkpoint directory")
        text = pointer.read_text().strip()
        if text != "release" and not text.isdigit():
            raise UserError(f"{pointer}: expected an iteration number or 'release', found {text[:40]!r}")
        it_dir = path / ("release" if text == "release" else iter_dir_name(int(text)))
    if not it_dir.is_dir():
        raise UserError(f"{path}: checkpoint directory {it_dir.name} not found")
    return it_dir


def rank_files(it_dir: Path) -> dict[tuple[int, int], Path]:
    """(tp_rank, pp_rank) -> model_optim_rng.pt for the whole grid; a hole in the grid is an error."""
    found: dict[tuple[int, int], Path] = {}
    for d in it_dir.iterdir():
        m = _RANK_RE.match(d.name)
        if m and d.is_dir():
            found[int(m.group(1)), int(m.group(2) or 0)] = d / STATE_FILE
    if not found:
        if any(it_dir.glob("*.distcp")) or (it_dir / ".metadata").is_file():
            raise UserError(f"{it_dir}: a torch_dist (distributed) checkpoint; save it with --ckpt-format torch "
                            "(one model_optim_rng.pt per rank) for llmctl to read it")
        raise UserError(f"{it_dir}: no mp_rank_* shard directories")
    tp = max(t for t, _ in found) + 1
    pp = max(p for _, p in found) + 1
    for t in range(tp):
        for p in range(pp):
            f = found.get((t, p))
            if f is None or not f.is_file():
                name = rank_dir_name(t, p if pp > 1 else None)
                raise UserError(f"{it_dir}: missing shard {name}/{STATE_FILE} (TP={tp}, PP={pp})")
    return found


def is_mcore_checkpoint(path: str | os.PathLike, iteration: int | None = None) -> bool:
    """Whether `path` holds megatron-core weights (told by the first shard's keys, not the directory layout,
    which llmctl's native checkpoints share). A shard that pickles a disallowed object raises."""
    try:
        files = rank_files(resolve_iteration_dir(path, iteration))
    except (UserError, OSError):
        return False
    obj = load_rank_file(files[0, 0], mmap=True)
    model = obj.get("model", obj.get("model0"))
    return isinstance(model, dict) and any(
        isinstance(k, str) and k.startswith(("decoder.", "embedding.", "output_layer.")) for k in model)


def _args_dict(obj: dict[str, Any], path: Path) -> dict[str, Any]:
    args = obj.get("args")
    if isinstance(args, argparse.Namespace):
        return vars(args)
    if isinstance(args, dict):
        return args
    raise UserError(f"{path}: no 'args' (argparse.Namespace) in the checkpoint; cannot rebuild the model")


def read_mcore_state(path: str | os.PathLike, iteration: int | None = None
                     ) -> tuple[ModelConfig, dict[str, torch.Tensor], Path, dict[str, Any]]:
    """(ModelConfig, native state dict, iteration dir, info{tp, pp, iteration, num_layer_list}) gathered from
    every TP/PP shard."""
    it_dir = resolve_iteration_dir(path, iteration)
    files = rank_files(it_dir)
    tp = max(t for t, _ in files) + 1
    pp = max(p for _, p in files) + 1
    loaded = {key: load_rank_file(f) for key, f in files.items()}
    first = files[0, 0]
    args = _args_dict(loaded[0, 0], first)
    for field, have in (("tensor_model_parallel_size", tp), ("pipeline_model_parallel_size", pp)):
        if args.get(field) not in (None, have):
            raise UserError(f"{first}: args.{field}={args[field]} but {it_dir.name} holds {have} shard(s) that way")
    # Pieces in layer order: virtual chunk c of stage s covers the (c * pp + s)-th group of layers.
    chunks = sorted(int(k[5:]) for k in loaded[0, 0] if isinstance(k, str) and re.fullmatch(r"model\d+", k))
    keys = [f"model{c}" for c in chunks] or ["model"]
    pieces = []
    for key in keys:
        for s in range(pp):
            shards = []
            for t in range(tp):
                state = loaded[t, s].get(key)
                if not isinstance(state, dict):
                    raise UserError(f"{files[t, s]}: no '{key}' state dict")
                shards.append(state)
            pieces.append(shards)
    embed = pieces[0][0].get("embedding.word_embeddings.weight")
    if not isinstance(embed, torch.Tensor):
        raise UserError(f"{files[0, 0]}: no embedding.word_embeddings.weight on the first pipeline stage")
    qkv_bias = any(k.endswith("linear_qkv.bias") for k in pieces[0][0])
    has_out = any("output_layer.weight" in piece[0] for piece in pieces)
    cfg = mcore.config_from_args(args, vocab_size=embed.shape[0] * tp, qkv_bias=qkv_bias,
                                 has_output_layer=has_out, source=str(first))
    del embed
    if args.get("num_layer_list"):
        counts = [mcore.stage_num_layers(piece[0]) for piece in pieces]
        want = parse_layer_list(args["num_layer_list"])
        if len(keys) == 1 and counts != want:
            raise UserError(f"{first}: args.num_layer_list={args['num_layer_list']} but the stages hold {counts}")
    native = mcore.layout_for(cfg.family).from_pieces(pieces, cfg)
    info = {"tp": tp, "pp": pp, "iteration": loaded[0, 0].get("iteration"), "vocab_size": args.get("vocab_size"),
            "num_layer_list": [mcore.stage_num_layers(piece[0]) for piece in pieces]}
    return cfg, native, it_dir, info


def check_mcore_layout(cfg: ModelConfig, tp: int = 1, pp: int = 1,
                       num_layer_list: Sequence[int] | str | None = None) -> list[int]:
    """Layers per stage, or a one-line UserError when the model cannot be cut into TP x PP (before any work)."""
    mcore.layout_for(cfg.family)
    mcore.check_split(cfg, tp, pp)
    return mcore.layer_counts(cfg.num_layers, pp, num_layer_list)


def write_mcore_shards(it_dir: str | os.PathLike, iteration: int, native_state: dict[str, torch.Tensor],
                       model_cfg: ModelConfig, tp: int = 1, pp: int = 1,
                       num_layer_list: Sequence[int] | str | None = None, *,
                       extra_args: dict[str, Any] | None = None) -> None:
    """The `mp_rank_*` grid of one iteration into the existing directory `it_dir` (the caller makes it
    appear atomically: `save_mcore_checkpoint`, or the training driver's sharded save). Weights keep their
    dtype; `extra_args` override/add `args` fields (e.g. consumed_train_samples)."""
    cfg, it_dir = model_cfg, Path(it_dir)
    counts = check_mcore_layout(cfg, tp, pp, num_layer_list)
    layout = mcore.layout_for(cfg.family)
    state = {k: v.detach().cpu() for k, v in strip_wrappers(native_state).items()}  # no-op for CPU tensors
    state = fit_vocab_state(state, cfg, "save_mcore_checkpoint")  # cfg.vocab_rows rows, as args say
    check_keys(set(ADAPTERS["llama"].name_map(cfg)), set(state) - {"lm_head.weight"} if cfg.tie_embeddings
               else set(state), "save_mcore_checkpoint")
    dtype = state["embed.weight"].dtype
    args = argparse.Namespace(**{**mcore.args_from_config(cfg, tp, pp, counts, dtype, iteration),
                                 **(extra_args or {})})
    arena = mcore.Arena()  # one rank's copied tensors at a time, in memory reused by the next
    for s in range(pp):
        for t in range(tp):
            rank_dir = it_dir / rank_dir_name(t, s if pp > 1 else None)
            rank_dir.mkdir()
            arena.reset()
            torch.save({"args": args, "checkpoint_version": CHECKPOINT_VERSION, "iteration": iteration,
                        "model": layout.to_shard(state, cfg, tp, t, s, counts, arena)}, rank_dir / STATE_FILE)


def save_mcore_checkpoint(out_dir: str | os.PathLike, iteration: int, native_state: dict[str, torch.Tensor],
                          model_cfg: ModelConfig, tp: int = 1, pp: int = 1,
                          num_layer_list: Sequence[int] | str | None = None, *,
                          tokenizer_dir: str | os.PathLike | None = None,
                          extra_args: dict[str, Any] | None = None) -> Path:
    """Write `native_state` (llmctl names) as a megatron-core checkpoint MindSpeed can load and continue from.

    `DIR/iter_{iteration:07d}/` is built under a temp name and renamed when complete, then the pointer file is
    replaced: a crash leaves the pointer naming a complete checkpoint. Weights keep their dtype. `extra_args`
    are added to the pickled `args` (e.g. consumed_train_samples). Returns the iteration directory."""
    out_dir = Path(out_dir)
    check_mcore_layout(model_cfg, tp, pp, num_layer_list)
    final = out_dir / iter_dir_name(iteration)
    with atomic_dir(final) as tmp:
        write_mcore_shards(tmp, iteration, native_state, model_cfg, tp, pp, num_layer_list, extra_args=extra_args)
        if tokenizer_dir is not None:
            copy_tokenizer(tokenizer_dir, tmp / "tokenizer")
    write_text_atomic(out_dir / POINTER, f"{iteration}\n")
    return final
