"""Model shapes that grow in proportion, their parameter counts and the FLOP model of a plan.

A scaling grid compares models of one family at many sizes, so their shapes must differ only in size: layers and
hidden size grow together (the base's hidden/layers aspect ratio is kept within a factor `ASPECT_BAND`), the head
size and the GQA and FFN ratios of the base are kept, heads are a multiple of 8 where the size allows (and of the
TP size always), hidden and FFN sizes are multiples of 128 (64 at toy scale, hidden < 512) so the matrices tile
well and split over TP, and the vocab is padded to 128 × TP as Megatron pads it.

Two parameter counts are reported for every shape, and a plan says which one its law uses:
- `params_total`: every weight, the embedding and LM head included (Hoffmann et al.'s N);
- `params_non_embedding`: without the embedding and LM head matrices (Kaplan et al.'s N, the default: at toy
  scale the vocab matrices are most of the model and bend the law).
FLOP models: `6nd` is C = 6 N D with the plan's N — the attention scores and (for non-embedding N) the LM head
are left out, as in Kaplan et al. and Hoffmann et al.'s approximation; `full` is what the MFU numerator counts
(`ModelConfig.flops_per_token`): 6 × every matmul weight (LM head included, embedding lookup not) plus the
causal attention term 6 · layers · hidden · seq_length per token.
"""

from __future__ import annotations

import dataclasses
import math

from llmctl.core.errors import UserError
from llmctl.core.model_config import ModelConfig

PARAM_KINDS = ("non-embedding", "total")
FLOP_MODELS = ("6nd", "full")
ASPECT_BAND = 2.0  # hidden/layers may differ from the base's ratio by at most this factor either way
SHAPE_KEYS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "ffn_hidden_size")


def at_padded_vocab(cfg: ModelConfig, tp: int = 1) -> ModelConfig:
    """The model with the rows a run at TP `tp` trains (Megatron's padding, `ModelConfig.padded_for`)."""
    return dataclasses.replace(cfg, vocab_size=cfg.padded_for(tp), padded_vocab_size=None)


def params_total(cfg: ModelConfig, tp: int = 1) -> int:
    return at_padded_vocab(cfg, tp).num_params()


def params_non_embedding(cfg: ModelConfig) -> int:
    vocab_matrices = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_embeddings else 2)
    return cfg.num_params() - vocab_matrices


def count_params(cfg: ModelConfig, kind: str, tp: int = 1) -> int:
    if kind not in PARAM_KINDS:
        raise UserError(f"params kind '{kind}' is not one of {', '.join(PARAM_KINDS)}")
    return params_total(cfg, tp) if kind == "total" else params_non_embedding(cfg)


def flops_per_token(cfg: ModelConfig, kind: str, flop_model: str, seq_length: int, tp: int = 1) -> float:
    """Training FLOPs per token under the plan's FLOP model (see the module docstring)."""
    if flop_model == "6nd":
        return 6.0 * count_params(cfg, kind, tp)
    if flop_model == "full":
        return at_padded_vocab(cfg, tp).flops_per_token(seq_length)
    raise UserError(f"FLOP model '{flop_model}' is not one of {', '.join(FLOP_MODELS)}")


def _heads_for(hidden: int, head_dim: int, tp: int) -> int | None:
    """Heads for `hidden`: near hidden/head_dim, dividing hidden with an even head size, a multiple of TP, and a
    multiple of 8 within a factor 2 of the target once the target reaches 8 (None: no such count, so this
    width is skipped); smaller models keep fewer."""
    target = hidden / head_dim
    options = [h for h in range(tp, hidden + 1, tp) if hidden % h == 0 and (hidden // h) % 2 == 0]
    if not options:
        return None
    if target >= 8:  # big enough for 8 heads: a width that cannot have them is skipped
        options = [h for h in options if h % 8 == 0 and 0.5 <= h / target <= 2]
        if not options:
            return None
    return min(options, key=lambda h: (abs(math.log(h / target)), h))


def _kv_heads_for(heads: int, ratio: float, tp: int) -> int:
    """KV heads keeping the base's heads/kv ratio (GQA), dividing the heads, a multiple of TP when possible."""
    target = max(1.0, heads / ratio)
    options = [k for k in range(1, heads + 1) if heads % k == 0 and k % tp == 0] or [heads]
    return min(options, key=lambda k: (abs(math.log(k / target)), k))


def proportional_shapes(base: ModelConfig, *, tp: int = 1, multiple: int | None = None,
                        max_hidden: int | None = None, max_layers: int = 128) -> list[ModelConfig]:
    """Every shape of the base's family within the aspect band, smallest first: the planner's candidates."""
    multiple = multiple or (64 if base.hidden_size < 512 else 128)
    max_hidden = max_hidden or max(16 * base.hidden_size, 8 * multiple)
    aspect = base.hidden_size / base.num_layers
    head_dim = base.head_dim
    gqa = base.num_heads / base.kv_heads
    ffn_ratio = base.ffn_hidden_size / base.hidden_size
    shapes = []
    for hidden in range(multiple, max_hidden + 1, multiple):
        heads = _heads_for(hidden, head_dim, tp)
        if heads is None:
            continue
        kv = _kv_heads_for(heads, gqa, tp)
        ffn = max(multiple, round(ffn_ratio * hidden / multiple) * multiple)
        if ffn % tp:
            continue
        lo = max(1, math.ceil(hidden / (aspect * ASPECT_BAND)))
        hi = min(max_layers, math.floor(hidden / (aspect / ASPECT_BAND)))
        for layers in range(lo, hi + 1):
            shapes.append(dataclasses.replace(base, hidden_size=hidden, num_layers=layers, num_heads=heads,
                                              num_kv_heads=kv, ffn_hidden_size=ffn))
    shapes.sort(key=params_non_embedding)
    return shapes


def shape_name(cfg: ModelConfig) -> str:
    return f"h{cfg.hidden_size}-l{cfg.num_layers}"


def check_shape(cfg: ModelConfig, where: str, tp: int = 1) -> None:
    """A grid point's model must build and split over TP: one line naming the point otherwise."""
    try:
        cfg.validate()
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    for key in ("num_heads", "kv_heads", "ffn_hidden_size"):
        value = getattr(cfg, key)
        if value % tp:
            raise UserError(f"{where}: model {key} {value} is not divisible by TP {tp}")
    for key in SHAPE_KEYS:
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise UserError(f"{where}: model.{key} must be >= 1, got {value}")
