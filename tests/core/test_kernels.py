"""Every accelerated kernel equals its plain-torch reference on random inputs (CPU), and kernel selection
follows priority, availability and per-op overrides."""

from __future__ import annotations

import types

import pytest
import torch
from llmctl.core import plugins
from llmctl.core.errors import UserError
from llmctl.core.nn.kernels import default_kernels, fused, reference, select_kernels
from llmctl.core.model_config import get_preset
from llmctl.core.nn.model import Transformer


def _qkv(B=2, H=4, Hkv=2, T=7, S=7, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, H, T, D, generator=g),
        torch.randn(B, Hkv, S, D, generator=g),
        torch.randn(B, Hkv, S, D, generator=g),
    )


@pytest.mark.parametrize("H,Hkv", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("T,S", [(7, 7), (1, 9), (3, 9)])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_equals_reference_attention(H, Hkv, T, S, causal, padded):
    q, k, v = _qkv(H=H, Hkv=Hkv, T=T, S=S)
    mask = None
    if padded:  # row 0 has 3 left-padding keys, row 1 none: bool [B, 1, 1, S], True = attend
        mask = torch.ones(2, 1, 1, S, dtype=torch.bool)
        mask[0, ..., :3] = False
    ref = reference.attention(q, k, v, mask=mask, causal=causal)
    out = fused.sdpa_attention(q, k, v, mask=mask, causal=causal)
    # rows with no key to attend to (padding queries) are don't-care; compare every other row
    keep = torch.ones(2, 1, T, S, dtype=torch.bool)
    if causal:
        keep = keep & torch.ones(T, S, dtype=torch.bool).tril(S - T)
    if mask is not None:
        keep = keep & mask
    live = keep.any(-1).expand(-1, H, -1)  # [B, H, T]
    assert live.any()
    assert torch.allclose(out[live], ref[live], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_rms_norm_equals_reference(dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 5, 64, generator=g) * 4).to(dtype)
    w = torch.randn(64, generator=g).to(dtype)
    ref, out = reference.rms_norm(x, w, 1e-6), fused.torch_rms_norm(x, w, 1e-6)
    assert out.dtype == ref.dtype == dtype
    assert torch.allclose(out.float(), ref.float(), atol=1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("chunk", [4096, 5])
def test_chunked_cross_entropy_forward_and_grads(chunk):
    g = torch.Generator().manual_seed(0)
    N, Hd, V = 23, 32, 97
    hidden = torch.randn(N, Hd, generator=g, dtype=torch.float64).float()
    weight = torch.randn(V, Hd, generator=g) * 0.3
    targets = torch.randint(0, V, (N,), generator=g)
    targets[[0, 7, 8, 22]] = -100
    upstream = torch.rand(N, generator=g)

    def run(fn):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss = fn(h, w, targets)
        (loss * upstream).sum().backward()
        return loss.detach(), h.grad, w.grad

    ref = run(reference.cross_entropy)
    out = run(lambda h, w, t: fused.chunked_cross_entropy(h, w, t, chunk=chunk))
    assert torch.equal(out[0][[0, 7, 8, 22]], torch.zeros(4))  # ignore_index -> 0 loss
    for a, b in zip(out, ref):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert torch.equal(out[1][[0, 7, 8, 22]], torch.zeros(4, Hd))  # and no gradient


def test_model_with_accelerated_kernels_matches_reference_loss_and_grads():
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    ref_model = Transformer(cfg)
    fast = Transformer(cfg, ops=select_kernels("cuda"))  # SDPA + torch rms_norm + chunked CE, all plain torch
    fast.load_state_dict(ref_model.state_dict())
    ref_model.set_kernels(
        select_kernels("cpu", {op: "reference" for op in ("attention", "rms_norm", "cross_entropy")})
    )
    tokens = torch.randint(0, cfg.vocab_size, (2, 16))
    targets = torch.randint(0, cfg.vocab_size, (2, 16))
    losses = []
    for m in (ref_model, fast):
        loss = m(tokens, targets).mean()
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    for (n, a), b in zip(ref_model.named_parameters(), fast.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), n


def test_select_kernels_priority_availability_and_overrides():
    cpu = select_kernels("cpu")
    assert cpu.names["attention"] == "sdpa" and cpu.attention is fused.sdpa_attention
    assert cpu.names["rms_norm"] == "reference" and cpu.names["cross_entropy"] == "reference"
    cuda = select_kernels("cuda")
    assert cuda.names["rms_norm"] == "torch" and cuda.names["cross_entropy"] == "chunked"
    forced = select_kernels("cuda", {"attention": "reference", "cross_entropy": "reference"})
    assert forced.attention is reference.attention and forced.names["cross_entropy"] == "reference"
    assert default_kernels().names["attention"] == "sdpa"
    with pytest.raises(UserError, match="unknown kernel op 'attn'"):
        select_kernels("cpu", {"attn": "sdpa"})
    with pytest.raises(UserError, match="kernel 'attention' has no backend 'flash3'.*reference, sdpa"):
        select_kernels("cpu", {"attention": "flash3"})


def test_third_party_kernel_wins_by_priority_only_where_available(monkeypatch):
    def my_swiglu(gate, up):
        return reference.swiglu(gate, up)

    fancy = types.SimpleNamespace(
        register_kernels=plugins.hookimpl(
            lambda register: register(
                "swiglu", "fancy", my_swiglu, priority=50, available=lambda d: d == "cuda"
            )
        )
    )
    bus = plugins.PluginBus()
    bus.register_plugin(fancy, "fancy", "llmctl-fancy", "1.0")
    monkeypatch.setattr(plugins, "_BUS", bus)
    assert select_kernels("cuda").swiglu is my_swiglu
    assert select_kernels("cpu").swiglu is reference.swiglu
    assert select_kernels("cpu", {"swiglu": "fancy"}).names["swiglu"] == "fancy"
