"""Native <-> Megatron-core (`GPTModel`) state dicts: names, fused QKV / fc1 layout, TP shards, PP stages.

Pure tensor mapping, no file I/O (that is `mcore_io`). Megatron-core keeps what llmctl stores as separate
matrices fused and sharded, and MindSpeed users hold weights in exactly that form:

- `linear_qkv` is interleaved per query group: for each of the `ng` groups, its `nh/ng` query heads, then its
  key head, then its value head (each `head_dim` rows). A TP rank holds `ng/tp` whole groups, so a TP shard is
  a plain dim-0 chunk of the fused matrix, and TP must divide the KV heads.
- `linear_fc1` is `[gate; up]`; TP rank r holds `cat(chunk(gate, tp)[r], chunk(up, tp)[r])`.
- `linear_proj` and `linear_fc2` split on dim 1; embedding and output layer on dim 0 (vocab); norms replicate.
- Layer indices restart at 0 on every pipeline stage; the embedding lives on the first stage, the final norm
  and output layer on the last (the output layer also when tied but PP > 1: Megatron keeps a copy there).

Every transform is a reshape/cat/chunk, so HF -> mcore -> HF is bit-identical.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Sequence

import torch

from ..errors import UserError
from ..pipeline_layers import stage_layer_counts
from ..model_config import ModelConfig

_LAYER = "decoder.layers.{j}."
#: Linear layers whose (weightless, local-spec) `_extra_state` entries megatron-core's state_dict() carries.
_EXTRA_STATE = ("self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2")
#: Transformer Engine specs fuse the norms into the following linear layer.
_TE_NORMS = {"self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
             "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight"}
_LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.")
#: `empty(shape, dtype)`: where a copied output tensor is allocated.
Empty = Callable[[tuple, torch.dtype], torch.Tensor]


def layer_counts(num_layers: int, pp: int, num_layer_list: Any = None) -> list[int]:
    """Layers per pipeline stage of an mcore checkpoint: `--num-layer-list`, else Megatron's exact even split."""
    return stage_layer_counts(num_layers, pp, num_layer_list)


def check_split(cfg: ModelConfig, tp: int, pp: int) -> None:
    """One-line errors for a TP/PP layout the model cannot be cut into."""
    if tp < 1 or pp < 1:
        raise UserError(f"tensor/pipeline parallel sizes must be >= 1 (got TP={tp}, PP={pp})")
    if cfg.kv_heads % tp:
        raise UserError(f"tensor parallel size {tp} does not divide the {cfg.kv_heads} KV heads (query groups)")
    if cfg.ffn_hidden_size % tp:
        raise UserError(f"tensor parallel size {tp} does not divide ffn_hidden_size {cfg.ffn_hidden_size}")
    if cfg.vocab_rows % tp:
        raise UserError(f"tensor parallel size {tp} does not divide the vocabulary rows ({cfg.vocab_rows}); "
                        "pad them to a multiple (--make-vocab-size-divisible-by or --padded-vocab-size)")


# ---- fused QKV -------------------------------------------------------------------------------------------------
def _fresh(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype)


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_groups: int,
             empty: Empty = _fresh) -> torch.Tensor:
    """[q; k; v] (HF order) of `num_groups` query groups -> megatron's per-group interleave. Works for weights
    [out, in] and biases [out], and for one TP rank's slice of whole groups. One copy, into `empty(shape)`."""
    rest = tuple(q.shape[1:])
    rows = [t.shape[0] // num_groups for t in (q, k, v)]
    out = empty((num_groups * sum(rows), *rest), q.dtype)
    groups, start = out.view(num_groups, sum(rows), *rest), 0
    for t, n in zip((q, k, v), rows):
        groups[:, start:start + n].copy_(t.reshape(num_groups, n, *rest))
        start += n
    return out


class Arena:
    """Output buffers for `to_mcore_shard`, reused from one TP rank's shard to the next (`reset()` once the
    previous shard is saved): its pages are faulted in once per conversion, not once per rank, and each
    tensor is a slice of a chunk's storage, so `torch.save` writes exactly its bytes."""

    def __init__(self, chunk_bytes: int = 64 << 20):
        self.chunk_bytes, self.chunks, self.index, self.offset = chunk_bytes, [], 0, 0

    def reset(self) -> None:
        self.index, self.offset = 0, 0

    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        nbytes = math.prod(shape) * dtype.itemsize
        while self.index < len(self.chunks) and self.offset + nbytes > self.chunks[self.index].nbytes():
            self.index, self.offset = self.index + 1, 0
        if self.index == len(self.chunks):
            self.chunks.append(torch.UntypedStorage(max(self.chunk_bytes, nbytes)))
            self.offset = 0
        piece = self.chunks[self.index][self.offset:self.offset + nbytes]
        self.offset += -(-nbytes // 64) * 64  # keep every tensor 64-byte aligned
        return torch.empty(0, dtype=dtype).set_(piece, 0, shape)


def unfuse_qkv(parts: Sequence[torch.Tensor], cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (HF order) from the TP ranks' fused tensors (each ng/tp whole groups; one rank = TP1). One copy."""
    ng, hd = cfg.kv_heads, cfg.head_dim
    per = cfg.num_heads // ng
    rest = parts[0].shape[1:]
    rows = sum(t.shape[0] for t in parts)
    if rows != ng * (per + 2) * hd or any(t.shape[0] % ((per + 2) * hd) for t in parts):
        raise UserError(f"linear_qkv has {rows} rows; {cfg.num_heads} heads in {ng} groups of "
                        f"head_dim {hd} need {ng * (per + 2) * hd}")
    split = [t.reshape(-1, (per + 2) * hd, *rest).split([per * hd, hd, hd], dim=1) for t in parts]
    return tuple(torch.cat([sp[i] for sp in split], dim=0).reshape(-1, *rest) for i in range(3))


def _own(t: torch.Tensor) -> torch.Tensor:
    """`t` with a storage of exactly its own bytes: torch.save writes a view's whole base storage. A contiguous
    view (a dim-0 TP chunk) gets a storage slice sharing its memory, so only non-contiguous chunks are copied."""
    if not t.is_contiguous():
        return t.contiguous()
    nbytes, start = t.numel() * t.element_size(), t.storage_offset() * t.element_size()
    storage = t.untyped_storage()
    if start == 0 and storage.nbytes() == nbytes:
        return t
    return torch.empty(0, dtype=t.dtype).set_(storage[start:start + nbytes], 0, t.shape, t.stride())


# ---- native -> mcore -------------------------------------------------------------------------------------------
def to_mcore_shard(native: dict[str, torch.Tensor], cfg: ModelConfig, tp: int, rank: int, stage: int,
                   counts: Sequence[int], empty: Empty = _fresh) -> dict[str, Any]:
    """TP rank `rank`'s model state dict of pipeline `stage` (layers per stage in `counts`), in megatron-core
    names. One rank at a time, so a conversion holds the source plus one shard, not the source twice. A
    dim-0 piece is a view of the source (no copy); a fused or dim-1 piece is one copy into `empty(shape,
    dtype)` (an `Arena` reuses the memory across ranks)."""
    shard: dict[str, Any] = {}

    def part(t: torch.Tensor, dim: int | None) -> torch.Tensor:
        t = t if dim is None else torch.chunk(t, tp, dim=dim)[rank]
        return _own(t) if t.is_contiguous() else empty(tuple(t.shape), t.dtype).copy_(t)

    ng = cfg.kv_heads // tp  # query groups on this rank, whole

    def qkv(n: str, suffix: str) -> torch.Tensor:
        q, k, v = (native[n + f"attn.{p}_proj.{suffix}"] for p in "qkv")
        q, k, v = (torch.chunk(t, tp, dim=0)[rank] for t in (q, k, v))  # groups r*ng .. (r+1)*ng
        return fuse_qkv(q, k, v, ng, empty)

    if stage == 0:
        shard["embedding.word_embeddings.weight"] = part(native["embed.weight"], 0)
    first = sum(counts[:stage])
    for j in range(counts[stage]):
        n, m = f"layers.{first + j}.", _LAYER.format(j=j)
        shard[m + "input_layernorm.weight"] = part(native[n + "input_norm.weight"], None)
        shard[m + "self_attention.linear_qkv.weight"] = qkv(n, "weight")
        if cfg.qkv_bias:
            shard[m + "self_attention.linear_qkv.bias"] = qkv(n, "bias")
        shard[m + "self_attention.linear_proj.weight"] = part(native[n + "attn.o_proj.weight"], 1)
        shard[m + "pre_mlp_layernorm.weight"] = part(native[n + "post_attn_norm.weight"], None)
        gate, up = (torch.chunk(native[n + f"mlp.{p}_proj.weight"], tp, dim=0)[rank] for p in ("gate", "up"))
        fc1 = shard[m + "mlp.linear_fc1.weight"] = empty((gate.shape[0] + up.shape[0], *gate.shape[1:]), gate.dtype)
        fc1[:gate.shape[0]].copy_(gate)
        fc1[gate.shape[0]:].copy_(up)
        shard[m + "mlp.linear_fc2.weight"] = part(native[n + "mlp.down_proj.weight"], 1)
        shard.update({m + name + "._extra_state": None for name in _EXTRA_STATE})
    if stage == len(counts) - 1:
        shard["decoder.final_layernorm.weight"] = part(native["norm.weight"], None)
        if not cfg.tie_embeddings or len(counts) > 1:
            head = native["embed.weight"] if cfg.tie_embeddings else native["lm_head.weight"]
            shard["output_layer.weight"] = part(head, 0)
        shard["output_layer._extra_state"] = None
    return shard


# ---- mcore -> native -------------------------------------------------------------------------------------------
def stage_num_layers(state: dict[str, Any]) -> int:
    """Layers held by one stage's state dict (local indices 0..n-1)."""
    found = {int(m.group(1)) for k in state if (m := _LAYER_RE.match(k))}
    if found and found != set(range(len(found))):
        raise UserError(f"decoder layer indices {sorted(found)[:8]} are not 0..{len(found) - 1} on one stage")
    return len(found)


def from_mcore(pieces: Sequence[Sequence[dict[str, Any]]], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Native state from megatron-core shards: `pieces` in layer order (pipeline stages, virtual chunks), each
    the list of its TP ranks' state dicts, which are emptied as they are read. Every weight must be used;
    `_extra_state` entries are ignored."""
    native: dict[str, torch.Tensor] = {}

    def get(p: int, name: str, dim: int | None, required: bool = True) -> torch.Tensor | None:
        shards = pieces[p]
        if name not in shards[0]:
            if required:
                raise UserError(f"megatron-core checkpoint: missing weight {name} (stage piece {p})")
            return None
        parts = [s.pop(name) for s in shards]  # consumed: its memory goes as soon as it is gathered
        if any(not isinstance(t, torch.Tensor) for t in parts):
            raise UserError(f"megatron-core checkpoint: {name} is not a tensor on every TP rank")
        return parts[0] if dim is None or len(parts) == 1 else torch.cat(parts, dim=dim)

    def get_parts(p: int, name: str) -> list[torch.Tensor]:
        if name not in pieces[p][0]:
            raise UserError(f"megatron-core checkpoint: missing weight {name} (stage piece {p})")
        return [s.pop(name) for s in pieces[p]]

    layer = 0
    for p, shards in enumerate(pieces):
        for s in shards:  # TE specs: norms fused into the next linear, renamed to the local-spec names
            for k in [k for k in s if k.endswith(tuple(_TE_NORMS))]:
                s[_LAYER_RE.match(k).group(0) + _TE_NORMS[k[_LAYER_RE.match(k).end():]]] = s.pop(k)
        if p == 0:
            native["embed.weight"] = get(p, "embedding.word_embeddings.weight", 0)
        for j in range(stage_num_layers(shards[0])):
            n, m = f"layers.{layer}.", _LAYER.format(j=j)
            native[n + "input_norm.weight"] = get(p, m + "input_layernorm.weight", None)
            # each TP rank holds ng/tp whole groups: the dim-0 concatenation is the TP1 fused tensor
            q, k, v = unfuse_qkv(get_parts(p, m + "self_attention.linear_qkv.weight"), cfg)
            native.update({n + "attn.q_proj.weight": q, n + "attn.k_proj.weight": k, n + "attn.v_proj.weight": v})
            if cfg.qkv_bias:
                q, k, v = unfuse_qkv(get_parts(p, m + "self_attention.linear_qkv.bias"), cfg)
                native.update({n + "attn.q_proj.bias": q, n + "attn.k_proj.bias": k, n + "attn.v_proj.bias": v})
            native[n + "attn.o_proj.weight"] = get(p, m + "self_attention.linear_proj.weight", 1)
            native[n + "post_attn_norm.weight"] = get(p, m + "pre_mlp_layernorm.weight", None)
            fc1 = [t.chunk(2, dim=0) for t in get_parts(p, m + "mlp.linear_fc1.weight")]
            native[n + "mlp.gate_proj.weight"] = torch.cat([g for g, _ in fc1], dim=0)
            native[n + "mlp.up_proj.weight"] = torch.cat([u for _, u in fc1], dim=0)
            native[n + "mlp.down_proj.weight"] = get(p, m + "mlp.linear_fc2.weight", 1)
            layer += 1
        if p == len(pieces) - 1:
            native["norm.weight"] = get(p, "decoder.final_layernorm.weight", None)
            head = get(p, "output_layer.weight", 0, required=not cfg.tie_embeddings)
            if head is not None and not cfg.tie_embeddings:
                native["lm_head.weight"] = head
    if layer != cfg.num_layers:
        raise UserError(f"megatron-core checkpoint holds {layer} decoder layers but args.num_layers is "
                        f"{cfg.num_layers}")
    stray = sorted(k for shards in pieces for k in shards[0] if not k.endswith("._extra_state"))
    if stray:
        more = f" (+{len(stray) - 5} more)" if len(stray) > 5 else ""
        raise UserError(f"megatron-core checkpoint: unexpected weights {', '.join(stray[:5])}{more} "
                        "(not a llama/qwen2-style GPTModel with these args)")
    return native


# ---- args <-> config ---------------------------------------------------------------------------------------------
_REQUIRED_ARGS = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads")


def config_from_args(args: dict[str, Any], *, vocab_size: int, qkv_bias: bool, has_output_layer: bool,
                     source: str) -> ModelConfig:
    """ModelConfig from the few `args` fields llmctl needs; a missing required field is a one-line error."""
    for key in _REQUIRED_ARGS:
        if args.get(key) is None:
            raise UserError(f"{source}: args has no '{key}' (needed to rebuild the model)")
    if args.get("group_query_attention") and args.get("num_query_groups") is None:
        raise UserError(f"{source}: args.group_query_attention is set but args has no 'num_query_groups'")
    kv = args.get("num_query_groups") if args.get("group_query_attention") else None
    if args.get("normalization", "RMSNorm") != "RMSNorm" or args.get("swiglu") is False:
        raise UserError(f"{source}: args normalization={args.get('normalization')!r} swiglu={args.get('swiglu')!r};"
                        " only RMSNorm + SwiGLU (llama/qwen2) models are supported")
    tied = not args.get("untie_embeddings_and_output_weights", not has_output_layer)
    rope_scaling = None
    if args.get("rope_scaling_type") == "llama3":
        rope_scaling = {"rope_type": "llama3", "factor": args.get("rope_scaling_factor"),
                        "low_freq_factor": args.get("low_freq_factor"),
                        "high_freq_factor": args.get("high_freq_factor"),
                        "original_max_position_embeddings": args.get("rope_scaling_original_max_position_embeddings")}
    hf_type = str(args.get("model_type_hf") or "")
    family = "qwen2" if "qwen" in hf_type else "llama" if "llama" in hf_type else ("qwen2" if qkv_bias else "llama")
    cfg = ModelConfig(
        vocab_size=vocab_size, hidden_size=int(args["hidden_size"]), num_layers=int(args["num_layers"]),
        num_heads=int(args["num_attention_heads"]), num_kv_heads=int(kv) if kv else None,
        ffn_hidden_size=int(args["ffn_hidden_size"]),
        make_vocab_size_divisible_by=int(args.get("make_vocab_size_divisible_by") or 128),
        max_seq_len=int(args.get("max_position_embeddings") or args.get("seq_length") or 4096),
        rope_theta=float(args.get("rotary_base") or 10000.0), rope_scaling=rope_scaling,
        norm_eps=float(args.get("norm_epsilon") or 1e-5), qkv_bias=qkv_bias, tie_embeddings=tied, family=family,
        init_std=float(args.get("init_method_std") or 0.02))
    kv_channels = args.get("kv_channels")
    if kv_channels and int(kv_channels) != cfg.head_dim:
        raise UserError(f"{source}: args.kv_channels={kv_channels} != hidden_size/num_attention_heads; not supported")
    cfg.validate()
    return cfg


def args_from_config(cfg: ModelConfig, tp: int, pp: int, counts: Sequence[int], dtype: torch.dtype,
                     iteration: int) -> dict[str, Any]:
    """The `args` fields a MindSpeed/Megatron run checks or needs to rebuild this model (Megatron's names)."""
    args: dict[str, Any] = dict(
        num_layers=cfg.num_layers, hidden_size=cfg.hidden_size, ffn_hidden_size=cfg.ffn_hidden_size,
        num_attention_heads=cfg.num_heads, group_query_attention=cfg.kv_heads != cfg.num_heads,
        num_query_groups=cfg.kv_heads, kv_channels=cfg.head_dim, vocab_size=cfg.vocab_size,
        padded_vocab_size=cfg.vocab_rows, make_vocab_size_divisible_by=cfg.make_vocab_size_divisible_by,
        max_position_embeddings=cfg.max_seq_len, seq_length=cfg.max_seq_len,
        position_embedding_type="rope", use_rotary_position_embeddings=True, rotary_base=cfg.rope_theta,
        normalization="RMSNorm", norm_epsilon=cfg.norm_eps, swiglu=True, add_bias_linear=False,
        add_qkv_bias=cfg.qkv_bias, untie_embeddings_and_output_weights=not cfg.tie_embeddings,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
        num_layer_list=",".join(map(str, counts)) if pp > 1 else None, params_dtype=dtype,
        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, use_mcore_models=True,
        transformer_impl="local", model_type_hf="qwen2" if cfg.family == "qwen2" else "llama2",
        init_method_std=cfg.init_std, iteration=iteration, consumed_train_samples=0, consumed_valid_samples=0)
    if cfg.rope_scaling:
        rs = cfg.rope_scaling
        args.update(rope_scaling_type="llama3", rope_scaling_factor=rs.get("factor"),
                    low_freq_factor=rs.get("low_freq_factor"), high_freq_factor=rs.get("high_freq_factor"),
                    rope_scaling_original_max_position_embeddings=rs.get("original_max_position_embeddings"))
    return args


@dataclasses.dataclass(frozen=True)
class McoreLayout:
    """The state-dict adapter a model family registers for megatron-core checkpoints (`register_models`
    extra `mcore=`). One layout, "gpt", serves llama and qwen2: they differ only by the qkv bias."""

    name: str = "gpt"

    to_shard = staticmethod(to_mcore_shard)
    from_pieces = staticmethod(from_mcore)


LAYOUTS = {"gpt": McoreLayout("gpt")}


def layout_for(family: str) -> McoreLayout:
    """The megatron-core layout a family registered (`register(family, ModelSpec(..., mcore="gpt"))`)."""
    from ..plugins import get_bus

    entry = get_bus().registry("models").get(family)
    name = entry.value.mcore if entry is not None else None
    if name not in LAYOUTS:
        raise UserError(f"model family '{family}' has no megatron-core layout registered")
    return LAYOUTS[name]
