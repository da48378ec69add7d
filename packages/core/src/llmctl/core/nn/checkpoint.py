"""Megatron-layout checkpoints, written atomically and loaded with `weights_only=True`.

    DIR/latest_checkpointed_iteration.txt          pointer, written last
    DIR/iter_{N:07d}/mp_rank_{tp:02d}[_{pp:03d}]/model_optim_rng.pt
    DIR/iter_{N:07d}/config.yaml                   full resolved config (self-describing)
    DIR/iter_{N:07d}/tokenizer/                    tokenizer files, so generate/eval/chat need only DIR

An iteration directory is built under a temp name and renamed when complete; the pointer is replaced after
that, so a crash at any moment leaves the pointer naming a complete checkpoint.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from ..errors import UserError
from ..io import atomic_path, write_text_atomic

POINTER = "latest_checkpointed_iteration.txt"
STATE_FILE = "model_optim_rng.pt"
_ITER_RE = re.compile(r"^iter_(\d{7})$")


def iter_dir_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def rank_dir_name(tp_rank: int = 0, pp_rank: int | None = None) -> str:
    return f"mp_rank_{tp_rank:02d}" + (f"_{pp_rank:03d}" if pp_rank is not None else "")


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / POINTER).is_file() or bool(_ITER_RE.match(path.name)) and (path / "config.yaml").is_file()


def latest_iteration(ckpt_dir: str | os.PathLike) -> int | None:
    """The iteration named by the pointer file, or None when there is no checkpoint yet."""
    pointer = Path(ckpt_dir) / POINTER
    if not pointer.is_file():
        return None
    text = pointer.read_text().strip()
    if not text.isdigit():
        raise UserError(f"{pointer}: expected an iteration number, found {text[:40]!r}")
    return int(text)


def list_iterations(ckpt_dir: str | os.PathLike) -> list[int]:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in ckpt_dir.iterdir() if (m := _ITER_RE.match(p.name)) and p.is_dir())


def save_checkpoint(ckpt_dir: str | os.PathLike, iteration: int, state: dict[str, Any],
                    config: dict[str, Any] | None = None, *, tokenizer_dir: str | os.PathLike | None = None,
                    keep: int | None = None, tp_rank: int = 0, pp_rank: int | None = None) -> Path:
    """One process writes one complete checkpoint, then moves the pointer to it, then prunes to `keep`."""
    return save_sharded_checkpoint(ckpt_dir, iteration, rank_dir_name(tp_rank, pp_rank), state, config,
                                   tokenizer_dir=tokenizer_dir, keep=keep)


def save_sharded_checkpoint(ckpt_dir: str | os.PathLike, iteration: int, shard: str | None,
                            state: dict[str, Any] | None, config: dict[str, Any] | None = None, *,
                            tokenizer_dir: str | os.PathLike | None = None, keep: int | None = None,
                            is_writer: bool = True, barrier: Callable[[], None] = lambda: None,
                            before_publish: Callable[[Path], None] | None = None) -> Path:
    """A checkpoint written by every rank that holds a shard, published by one.

    Every rank calls this. The writer makes `.iter_N.tmp/`; each rank with a `shard` ("mp_rank_00", ...)
    saves its state there; after a barrier the writer adds config.yaml and the tokenizer, renames the temp
    dir to `iter_N` and only then moves the pointer. A crash at any moment leaves the pointer on the last
    complete checkpoint (a leftover temp dir is removed by the next run). `before_publish(tmp)` runs on
    the writer just before the rename (fault-injection tests stop there)."""
    ckpt_dir = Path(ckpt_dir)
    final, tmp = ckpt_dir / iter_dir_name(iteration), ckpt_dir / f".{iter_dir_name(iteration)}.tmp"
    try:
        if is_writer:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier()
        if shard is not None:
            (tmp / shard).mkdir(parents=True, exist_ok=True)
            with atomic_path(tmp / shard / STATE_FILE) as path:
                torch.save(state, path)
        barrier()
        if is_writer:
            _publish(ckpt_dir, iteration, tmp, final, config, tokenizer_dir, keep, before_publish)
    except BaseException:
        if is_writer:  # an error in this process (a killed one leaves the temp dir to the next run)
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier()
    return final


def _publish(ckpt_dir: Path, iteration: int, tmp: Path, final: Path, config: dict[str, Any] | None,
             tokenizer_dir: str | os.PathLike | None, keep: int | None,
             before_publish: Callable[[Path], None] | None) -> None:
    """Complete the temp dir, rename it to iter_N, then move the pointer, then prune to the last `keep`."""
    if config is not None:
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    if tokenizer_dir is not None:
        copy_tokenizer(tokenizer_dir, tmp / "tokenizer")
    if before_publish is not None:
        before_publish(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_text_atomic(ckpt_dir / POINTER, f"{iteration}\n")
    if keep:
        for old in list_iterations(ckpt_dir)[:-keep]:
            if old != iteration:
                shutil.rmtree(ckpt_dir / iter_dir_name(old), ignore_errors=True)


def remove_stale_temps(ckpt_dir: str | os.PathLike) -> None:
    """Temp dirs a killed save left behind (the pointer never named them)."""
    ckpt_dir = Path(ckpt_dir)
    if ckpt_dir.is_dir():
        for tmp in ckpt_dir.glob(".iter_*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "generation_config.json", "llmctl_tokenizer.json",
                   "chat_template.jinja", "chat_template.json")


def copy_tokenizer(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy the tokenizer files that exist in `src` (HF or sentencepiece layout) into `dst`."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    found = False
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            found = True
    if not found:
        raise UserError(f"{src}: no tokenizer files found (expected one of tokenizer.json, tokenizer.model, vocab.json)")


def resolve_iteration_dir(path: str | os.PathLike, iteration: int | None = None) -> Path:
    """Accept a checkpoint root (uses the pointer or `iteration`) or an `iter_NNNNNNN` directory."""
    path = Path(path)
    if _ITER_RE.match(path.name) and path.is_dir():
        return path
    if not path.is_dir():
        raise UserError(f"checkpoint directory not found: {path}")
    if iteration is None:
        iteration = latest_iteration(path)
        if iteration is None:
            raise UserError(f"{path}: no {POINTER}; not a llmctl/Megatron checkpoint directory")
    it_dir = path / iter_dir_name(iteration)
    if not it_dir.is_dir():
        raise UserError(f"{path}: checkpoint for iteration {iteration} not found ({it_dir.name} missing)")
    return it_dir


def load_checkpoint(path: str | os.PathLike, iteration: int | None = None, *, map_location: Any = "cpu",
                    tp_rank: int = 0, pp_rank: int | None = None, shard: str | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(state, config, iteration_dir) of one shard folder (`shard`, else mp_rank_{tp}[_{pp}]). Loads with
    weights_only=True: a pickled object is refused, not run."""
    it_dir = resolve_iteration_dir(path, iteration)
    state_file = it_dir / (shard or rank_dir_name(tp_rank, pp_rank)) / STATE_FILE
    if not state_file.is_file():
        raise UserError(f"{it_dir}: missing {state_file.relative_to(it_dir)}")
    try:
        state = torch.load(state_file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise UserError(f"{state_file}: refused to load (not plain tensors/containers: {first[:160]})") from None
    except (RuntimeError, EOFError) as e:
        raise UserError(f"{state_file}: corrupt checkpoint ({str(e).splitlines()[0][:160]})") from None
    config_file = it_dir / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    return state, config or {}, it_dir
