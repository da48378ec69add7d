"""One decoder-only transformer for the llama family (Llama 2/3, Qwen2/2.5), readable top to bottom.

Pre-norm blocks of grouped-query attention with RoPE and a SwiGLU MLP, RMSNorm, optional qkv bias, tied or
untied embeddings. The embedding and output layer have `cfg.vocab_rows` rows (Megatron's padded vocabulary);
the rows past `cfg.vocab_size` are padding: initialised to zero, outside every softmax (the logits returned
and the loss cover the real rows only), so they never train and never change what the model computes. The math of each op lives in `kernels` (reference or accelerated); this file has no
parallelism, I/O or logging: parallel layouts are applied to it from outside.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn as nn

from ..model_config import ModelConfig
from .kernels import KernelSet, default_kernels


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """RoPE inverse frequencies, with Llama-3's wavelength-dependent scaling when configured."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = cfg.rope_scaling or {}
    if rs.get("rope_type", rs.get("type")) != "llama3":
        return inv_freq
    factor, low, high = rs["factor"], rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old_len = rs.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, smoothed, scaled)


class Documents(tuple):
    """Lengths of the consecutive documents that fill the tokens of a batch, in order, read row after row
    (no document crosses a row's end). Attention stays inside each one (causal within it): a padding-free
    batch (samples laid end to end in one row instead of padded to the longest) or neat-packed rows train
    each sample exactly as alone, at the cost of its own tokens. `prefixes[i]`, when given, is an earlier
    document that document i continues: it sees all of that one's tokens before its own (a DPO pair's chosen
    and rejected answers both continue one copy of the prompt); -1 = none."""

    def __new__(cls, lengths, prefixes=None):
        docs = super().__new__(cls, (int(n) for n in lengths))
        docs.prefixes = tuple(int(p) for p in prefixes) if prefixes is not None else None
        if docs.prefixes is not None and (len(docs.prefixes) != len(docs)
                                          or any(not -1 <= p < i for i, p in enumerate(docs.prefixes))):
            raise ValueError(f"document prefixes {docs.prefixes} must name an earlier document (or -1) each")
        return docs

    def fill_rows(self, rows: int, length: int) -> bool:
        """Whether these documents partition `rows` rows of `length` tokens, none crossing a row's end."""
        ends = set(itertools.accumulate(self))
        return sum(self) == rows * length and all(r * length in ends for r in range(1, rows))

    def ids(self, rows: int, length: int) -> torch.Tensor:
        """Each token's document number, [rows, length] (for kernels that mask rather than split: those
        cannot express a prefix, and need each row's own documents)."""
        if not self.fill_rows(rows, length) or max(self.prefixes or (-1,)) >= 0:
            raise ValueError(f"documents {tuple(self)} must fill rows of {length} tokens (none crossing a "
                             "row's end), without prefixes")
        return torch.repeat_interleave(torch.arange(len(self)), torch.tensor(self)).view(rows, length)


def document_attention(attention, q, k, v, docs: Documents) -> torch.Tensor:
    """`attention` run per document on q/k/v [B, H, T, D] split along the rows' tokens: no [T, T] mask, and
    no work spent on pairs of tokens from different documents. A document with a prefix attends to the
    prefix's keys and values, then its own (causal aligned at the end, as with a cache)."""
    B, H, T, _ = q.shape
    if B > 1:  # the rows end to end: one sequence the documents split, then the rows back
        def fold(t):
            return t.transpose(0, 1).reshape(t.shape[1], B * T, t.shape[3])[None]

        out = document_attention(attention, fold(q), fold(k), fold(v), docs)
        return out[0].view(H, B, T, -1).transpose(0, 1)
    qs, ks, vs = q.split(docs, dim=2), k.split(docs, dim=2), v.split(docs, dim=2)
    prefixes = docs.prefixes or (-1,) * len(docs)
    out = []
    for qd, kd, vd, p in zip(qs, ks, vs, prefixes):
        if p >= 0:
            kd, vd = torch.cat((ks[p], kd), dim=2), torch.cat((vs[p], vd), dim=2)
        out.append(attention(qd, kd, vd, causal=True))
    return torch.cat(out, dim=2)


class KVCache:
    """Preallocated per-layer keys/values for incremental decoding. `length` = tokens already cached."""

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, dtype: torch.dtype, device):
        shape = (batch, cfg.kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)]
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def select(self, index: torch.Tensor) -> None:
        """Keep only the batch rows in `index` (e.g. drop finished sequences, or expand a shared prefix)."""
        self.k = [k.index_select(0, index) for k in self.k]
        self.v = [v.index_select(0, index) for v in self.v]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, ops: KernelSet):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps, self.ops = eps, ops

    def forward(self, x):
        return self.ops.rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, ops: KernelSet):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_heads, cfg.kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)
        self.ops = ops

    def forward(self, x, cos, sin, mask, cache: KVCache | None, layer: int):
        """`mask`: None (causal), a bool [B|1, 1, T, S] padding mask, or `Documents` (causal per document)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = self.ops.rope(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        if isinstance(mask, Documents):
            out = document_attention(self.ops.attention, q, k, v, mask)
        else:
            out = self.ops.attention(q, k, v, mask=mask, causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, ops: KernelSet):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.ffn_hidden_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.ffn_hidden_size, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_hidden_size, cfg.hidden_size, bias=False)
        self.ops = ops

    def forward(self, x):
        return self.down_proj(self.ops.swiglu(self.gate_proj(x), self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, ops: KernelSet):
        super().__init__()
        self.input_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps, ops)
        self.attn = Attention(cfg, ops)
        self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps, ops)
        self.mlp = MLP(cfg, ops)

    def forward(self, x, cos, sin, mask, cache, layer):
        x = x + self.attn(self.input_norm(x), cos, sin, mask, cache, layer)
        return x + self.mlp(self.post_attn_norm(x))


class Transformer(nn.Module):
    """tokens [B,T] -> logits [B,T,V], or per-token loss [B,T] (fp32, 0 where target == -100) with targets."""

    def __init__(self, cfg: ModelConfig, ops: KernelSet | None = None):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.ops = ops or default_kernels()
        with torch.random.fork_rng(devices=[]):  # the layers' own init is redrawn by reset_parameters
            self.embed = nn.Embedding(cfg.vocab_rows, cfg.hidden_size)
            self.layers = nn.ModuleList(Block(cfg, self.ops) for _ in range(cfg.num_layers))
            self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps, self.ops)
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_rows, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)
        self.reset_parameters()

    def _apply(self, fn, recurse: bool = True):
        """`.to(bf16)`, `.to_empty()` or meta init would cast or blank the RoPE frequencies: the model owns
        them and recomputes them in fp32 on the new device after every such move, as HF keeps them."""
        super()._apply(fn, recurse)
        self.inv_freq = rope_inv_freq(self.cfg).to(self.inv_freq.device)
        return self

    def set_kernels(self, ops: KernelSet) -> None:
        self.ops = ops
        for m in self.modules():
            if hasattr(m, "ops"):
                m.ops = ops

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights with output projections scaled by 1/sqrt(2*layers) (GPT-2/Megatron).
        The vocabulary matrices draw their real rows only and zero the padding, so the random stream (these
        rows, and every weight after them) is the same whatever the padding."""
        std, vocab = self.cfg.init_std, self.cfg.vocab_size
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, std / math.sqrt(2 * self.cfg.num_layers))
            elif name in ("embed.weight", "lm_head.weight"):
                p[:vocab].normal_(0.0, std)
                p[vocab:].zero_()
            else:
                p.normal_(0.0, std)

    def rope_cos_sin(self, positions: torch.Tensor):
        """cos/sin [B|1, T, head_dim] for integer positions [B|1, T], computed in fp32 like HF."""
        freqs = positions[..., None].float() * self.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None, *,
                cache: KVCache | None = None, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, documents: Documents | None = None,
                loss_at: torch.Tensor | None = None, logits_at: torch.Tensor | None = None) -> torch.Tensor:
        """`attention_mask` [B, S] (1 = real token, 0 = left padding) covers cached + new tokens;
        `documents` (no cache): the rows hold several samples end to end (read row after row, none crossing a
        row's end), each attending only to itself, or to a prefix document and itself (pass `positions`
        restarting per document, or continuing the prefix's, too);
        `loss_at` [K]: the flat indices of the only targets that are trained (the others are -100): the LM
        head and cross-entropy run on those K positions alone, the rest of the returned loss is 0;
        `logits_at` [B, K] returns logits [B, K, V] at those positions only (scoring reads one or a few
        positions, and the vocab projection is the biggest matmul of a small model).
        V is `cfg.vocab_size`: the padded rows are in neither the logits nor the loss's softmax."""
        B, T = tokens.shape
        if documents is not None:
            documents = documents if isinstance(documents, Documents) else Documents(documents)
            if cache is not None or not documents.fill_rows(B, T):
                raise ValueError(f"documents {tuple(documents)} must partition the rows without a cache, "
                                 f"none crossing a row's end (got tokens {tuple(tokens.shape)})")
        past = cache.length if cache is not None else 0
        if positions is None:
            if attention_mask is not None:
                positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, past:past + T]
            else:
                positions = torch.arange(past, past + T, device=tokens.device)[None]
        mask = None
        if attention_mask is not None:
            mask = attention_mask[:, None, None, :past + T].bool()
        if documents is not None:
            mask = documents
        cos, sin = self.rope_cos_sin(positions)
        x = self.embed(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache, i)
        if cache is not None:
            cache.length += T
        x = self.norm(x)
        if targets is not None:
            x, targets = x.reshape(B * T, -1), targets.reshape(B * T)
            if loss_at is None:
                return self.loss_of(x, targets).view(B, T)
            trained = self.loss_of(x[loss_at], targets[loss_at])
            return trained.new_zeros(B * T).index_put((loss_at,), trained).view(B, T)
        if logits_at is not None:
            x = x.gather(1, logits_at[..., None].expand(-1, -1, x.shape[-1]))
        return self.lm_head(x)[..., :self.cfg.vocab_size]

    def loss_of(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token fp32 loss of the LM head on final hidden states [N, H] (targets [N], -100 = none), the
        softmax over the real vocabulary rows only (the cross_entropy kernel masks the padding)."""
        return self.ops.cross_entropy(hidden, self.lm_head.weight, targets, vocab_size=self.cfg.vocab_size)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
