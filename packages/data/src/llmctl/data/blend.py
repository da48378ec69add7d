"""Data blends: parse Megatron-style weighted prefix lists, resolve train/val prefixes, interleave sources.

Accepted blend specs (all give a list of (prefix, weight or None)):
  * Megatron string: "0.7 data/zh 0.3 data/en" (weights first), or "data/zh data/en" / "data/zh,data/en";
  * a list: ["0.7", "data/zh", "0.3", "data/en"], ["data/zh", "data/en"], [("data/zh", 0.7), ...],
    [{"prefix": "data/zh", "weight": 0.7}, ...];
  * a mapping {"data/zh": 0.7, "data/en": 0.3};
  * a path to a YAML file holding any of the above (optionally under a `blend:` key); a relative prefix in it
    is taken from the YAML file's folder when the data is there (`llmctl data mix` writes such a file).
Weights are normalised; without weights, sources are mixed in proportion to their token counts.

Prefix resolution (`resolve_prefix`), so one spec serves both splits of `llmctl data tokenize` output:
  * split "train": `P` itself when `P.idx/.bin` exist, else `P_train`;
  * split "val": `P[:-6] + "_val"` when `P` ends in `_train`; else `P_val` when it exists; else `P` itself
    when it exists (a dedicated validation prefix given as-is).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmctl.core.errors import UserError

from llmctl.core import mmidx as indexed

BlendSpec = Any  # str | list | dict | path


def _is_number(x: Any) -> bool:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return True
    if isinstance(x, str):
        try:
            float(x)
        except ValueError:
            return False
        return True
    return False


def _from_tokens(tokens: Sequence[Any], where: str) -> list[tuple[str, float | None]]:
    if not tokens:
        raise UserError(f"{where}: empty data blend")
    numeric = [_is_number(t) for t in tokens]
    if not any(numeric):
        return [(str(t), None) for t in tokens]
    if len(tokens) % 2 or not all(numeric[0::2]) or any(numeric[1::2]):
        raise UserError(
            f"{where}: a weighted blend alternates weight and prefix, e.g. '0.7 zh_prefix 0.3 en_prefix'"
        )
    return [(str(p), float(w)) for w, p in zip(tokens[0::2], tokens[1::2])]


def parse_blend(spec: BlendSpec) -> list[tuple[str, float | None]]:
    """Normalise any accepted spec to [(prefix, weight or None)]."""
    if isinstance(spec, os.PathLike):
        spec = str(spec)
    if isinstance(spec, str):
        s = spec.strip()
        if s.endswith((".yaml", ".yml")) and Path(s).is_file():
            import yaml

            try:
                data = yaml.safe_load(Path(s).read_text(encoding="utf-8"))
            except yaml.YAMLError as e:
                raise UserError(f"{s}: invalid YAML ({e})") from None
            if (
                isinstance(data, dict)
                and len(data) == 1
                and next(iter(data)) in ("blend", "data_path", "sources")
            ):
                data = next(iter(data.values()))
            return [(_beside(p, Path(s).parent), w) for p, w in parse_blend(data)]
        return _from_tokens(s.replace(",", " ").split(), "data blend")
    if isinstance(spec, dict):
        return [(str(k), float(v)) for k, v in spec.items()]
    if isinstance(spec, (list, tuple)):
        if all(isinstance(x, (list, tuple)) and len(x) == 2 for x in spec):
            return [(str(p), float(w)) if not _is_number(p) else (str(w), float(p)) for p, w in spec]
        if all(isinstance(x, dict) for x in spec):
            out = []
            for x in spec:
                path = x.get("prefix") or x.get("path")
                if not path:
                    raise UserError(f"data blend entry {x} needs a 'prefix' (or 'path')")
                out.append((str(path), float(x["weight"]) if "weight" in x else None))
            return out
        return _from_tokens(list(spec), "data blend")
    raise UserError(f"data blend must be a string, list, mapping or YAML path, got {type(spec).__name__}")


def _beside(prefix: str, folder: Path) -> str:
    """A relative prefix of a blend file, resolved from the file's folder when its data is there."""
    here = folder / prefix
    if Path(prefix).is_absolute() or not any(indexed.exists(f"{here}{s}") for s in ("", "_train", "_val")):
        return prefix
    return str(here)


def resolve_prefix(prefix: str, split: str = "train") -> str:
    """The indexed-dataset prefix to read for `split` (see the module docstring for the rule)."""
    p = str(prefix)
    if split == "train":
        for cand in (p, f"{p}_train"):
            if indexed.exists(cand):
                return cand
        raise UserError(f"data prefix '{p}': neither {p}.idx/.bin nor {p}_train.idx/.bin exist")
    if split in ("val", "valid", "validation"):
        cands = [p[: -len("_train")] + "_val"] if p.endswith("_train") else [f"{p}_val", p]
        for cand in cands:
            if indexed.exists(cand):
                return cand
        raise UserError(
            f"data prefix '{p}': no validation split (looked for {', '.join(c + '.idx' for c in cands)})"
        )
    raise UserError(f"split must be 'train' or 'val', got '{split}'")


def normalise_weights(weights: Sequence[float | None], sizes: Sequence[int]) -> np.ndarray:
    """Explicit weights normalised to 1; all-missing weights become token-count proportions."""
    if all(w is None for w in weights):
        w = np.asarray(sizes, dtype=np.float64)
    elif any(w is None for w in weights):
        raise UserError("data blend: give a weight for every prefix or for none")
    else:
        w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise UserError(f"data blend weights must be >= 0 and not all zero, got {list(w)}")
    return w / w.sum()


def blend_indices(weights: np.ndarray, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(source of sample i, index of that sample within its source) for i < num_samples.

    Source s's k-th sample is placed at time (k + 0.5) / w_s and all sources are merged by time, so every
    prefix of the blend holds within one sample of w_s * n samples of each source (like Megatron's greedy
    blending), deterministically and fully vectorised.
    """
    times, sources, ranks = [], [], []
    for s, w in enumerate(weights):
        if w <= 0:
            continue
        k = np.arange(int(np.ceil(w * num_samples)) + 2, dtype=np.int64)
        times.append((k + 0.5) / w)
        sources.append(np.full(len(k), s, dtype=np.int32))
        ranks.append(k)
    t = np.concatenate(times)
    src = np.concatenate(sources)
    rank = np.concatenate(ranks)
    order = np.lexsort((src, t))[:num_samples]
    return src[order].astype(np.int32), rank[order]
