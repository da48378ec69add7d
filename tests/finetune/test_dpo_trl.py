"""DPO against the real TRL: the dpo task's losses and reward metrics equal TRL's DPOTrainer loss computation
(`DPOTrainer._compute_loss`, TRL's own code, fed the same per-token policy and reference log-probs) for
sigmoid, hinge and ipo; cDPO label smoothing (which TRL's sigmoid no longer has) against the paper's formula;
the reference options (frozen copy, precomputed, LoRA with adapters disabled) agree."""

from __future__ import annotations

import collections
import types

import pytest
import torch
import torch.nn.functional as F
from finetune_helpers import dpo_data, finetune_cfg
from llmctl.finetune.dpo import answer_logps

trl = pytest.importorskip("trl")


def trl_dpo(per_token_logps, ref_per_token_logps, labels, *, beta, loss_type):
    """TRL's DPOTrainer._compute_loss on a stand-in trainer whose model returns these per-token log-probs.
    Rows are [chosen..., rejected...] as in TRL; `labels` [2N, T] are the shifted targets (-100 = prompt)."""
    from trl import DPOTrainer

    completion = labels != -100
    completion_mask = torch.cat([torch.zeros_like(completion[:, :1]), completion], 1).long()
    n = labels.shape[0] // 2
    ref = (ref_per_token_logps * completion).sum(1)

    def model(**kw):
        z = torch.zeros_like(per_token_logps)
        return types.SimpleNamespace(log_probs=per_token_logps * completion, entropy=z, mean_logits=z,
                                     is_top1=torch.zeros_like(completion))

    model.training = True
    acc = types.SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x,
                                unwrap_model=lambda m: m)
    fake = types.SimpleNamespace(
        model=model, accelerator=acc, aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=0.0,
        use_weighting=False, _metrics=collections.defaultdict(lambda: collections.defaultdict(list)),
        _total_train_tokens=0, _tp_size=1, args=types.SimpleNamespace(gradient_checkpointing_kwargs=None))
    inputs = {"input_ids": torch.zeros_like(completion_mask), "attention_mask": torch.ones_like(completion_mask),
              "completion_mask": completion_mask, "ref_chosen_logps": ref[:n], "ref_rejected_logps": ref[n:]}
    loss = DPOTrainer._compute_loss(fake, model, inputs, False)
    return float(loss), {k: v[-1] for k, v in fake._metrics["train"].items()}


def _trainer(dp_rank: int = 0, dp_size: int = 1):
    """What the task's on_train_start reads of the driver: the data-parallel layout, the device, the log."""
    par = types.SimpleNamespace(dp_rank=dp_rank, dp_size=dp_size, sum_over_dp=lambda t: t)
    return types.SimpleNamespace(par=par, device=torch.device("cpu"), log=types.SimpleNamespace(note=print),
                                 module=None)


def _task(tmp_path, tok_dir, hf_base, *overrides, method="dpo", start=True):
    from llmctl.finetune.dpo import DPOTask

    cfg = finetune_cfg(tmp_path, hf_base, dpo_data(tmp_path, tok_dir), method, *overrides)
    task = DPOTask(cfg)
    train, _ = task.build_datasets(4, 0)
    model = task.prepare(task.build_model(torch.device("cpu")))
    if start:
        task.on_train_start(_trainer())
    return task, train, model


def _perturb(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.ndim == 2:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


LAYOUTS = {  # name -> task overrides
    "padding-free, shared prompt": ["task.padding_free=true"],
    "padding-free": ["task.padding_free=true", "task.share_prompt=false"],
    "padded": ["task.padding_free=false"],
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_losses_and_metrics_equal_trl(tmp_path, tok_dir, hf_base, loss_type, layout):
    """Every batch layout (a pair's prompt once and both answers continuing it, answers end to end in one
    row, or padded rows) gives TRL's loss and metrics, which are computed from padded rows as TRL builds
    them."""
    task, train, model = _task(tmp_path, tok_dir, hf_base, f"task.loss_type={loss_type}", "task.beta=0.5",
                               *LAYOUTS[layout])
    _perturb(model)
    samples = [train[i] for i in range(4)]
    loss_sum, pairs, metrics = task.loss(model, task.collate(samples))
    docs = task.collate(samples).get("documents")
    assert (docs is not None) == (layout != "padded")
    if layout == "padding-free, shared prompt":  # 4 prompts, 8 answers continuing them
        assert len(docs) >= 12 and docs.prefixes.count(-1) < len(docs)
    task.options.padding_free = False
    batch = task.collate(samples)
    with torch.no_grad():
        policy = -model(batch["input_ids"], batch["labels"])
        ref = -task.reference(batch["input_ids"], batch["labels"])
    want_loss, want = trl_dpo(policy, ref, batch["labels"], beta=0.5, loss_type=loss_type)
    assert float(pairs) == 4
    assert float(loss_sum) / 4 == pytest.approx(want_loss, rel=1e-5, abs=1e-6)
    # the layouts sum an answer's fp32 log-probs in other orders: they agree to a few ulps of those sums
    # (~1e-5 for sums of ~70), and the rewards, beta x differences of them, to as many
    ulps = 4 * torch.finfo(torch.float32).eps * max(abs(want["logps/chosen"]), abs(want["logps/rejected"]), 1.0)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                 "logps/chosen", "logps/rejected"):
        s, c = metrics[name]
        assert float(s) / float(c) == pytest.approx(want[name], rel=1e-5, abs=max(ulps, 1e-6)), name
    assert 0 < want["rewards/accuracies"] < 1 or want["rewards/margins"] != 0


def test_shared_prompt_gives_the_gradients_of_whole_answers(tmp_path, tok_dir, hf_base):
    """The prompt computed once (both answers attending to it) back-propagates what two full rows do: the
    DPO loss and every trained weight's gradient equal the unshared layout's, with fewer tokens in the row."""
    task, train, model = _task(tmp_path, tok_dir, hf_base, "task.beta=0.5")
    _perturb(model)
    samples = [train[i] for i in range(4)]
    results = []
    for share in (True, False):
        task.options.share_prompt = share
        batch = task.collate(samples)
        model.zero_grad()
        loss_sum, _, _ = task.loss(model, batch)
        loss_sum.backward()
        results.append((batch["input_ids"].shape[1], float(loss_sum),
                        {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (shared_len, shared_loss, shared_grads), (full_len, full_loss, full_grads) = results
    assert shared_len < full_len and shared_loss == pytest.approx(full_loss, rel=1e-5)
    assert shared_grads.keys() == full_grads.keys() and shared_grads
    for name, g in full_grads.items():  # sums over tokens in another order: close to fp32 noise of the largest
        torch.testing.assert_close(shared_grads[name], g, rtol=1e-4, atol=1e-5 * float(g.abs().max()), msg=name)


def test_cdpo_label_smoothing_is_the_paper_formula():
    from llmctl.finetune.dpo import dpo_loss

    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(6, generator=g) * 3 for _ in range(4))
    beta, eps = 0.3, 0.1
    losses, cr, rr_ = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="sigmoid", label_smoothing=eps)
    h = (pc - rc) - (pr - rr)
    # cDPO (Mitchell 2023): with probability eps the preference label is flipped
    want = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    torch.testing.assert_close(losses, want)
    torch.testing.assert_close(cr - rr_, beta * h)


def test_precomputed_reference_equals_the_frozen_copy(tmp_path, tok_dir, hf_base):
    task, train, model = _task(tmp_path, tok_dir, hf_base)
    pre_task, pre_train, pre_model = _task(tmp_path / "pre", tok_dir, hf_base, "task.reference=precomputed")
    assert pre_task.reference is None
    for m in (model, pre_model):
        _perturb(m)
    b = task.collate([train[i] for i in range(4)])
    pb = pre_task.collate([pre_train[i] for i in range(4)])
    assert "ref_logps" in pb and torch.equal(b["input_ids"], pb["input_ids"])
    got, want = pre_task.loss(pre_model, pb), task.loss(model, b)
    assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-5)
    for name, (s, _) in want[2].items():
        assert float(got[2][name][0]) == pytest.approx(float(s), rel=1e-4, abs=1e-5), name


def test_precomputed_reference_is_split_over_data_parallel_ranks(tmp_path, tok_dir, hf_base):
    """Each data-parallel rank computes only its contiguous share of the pairs (the other rows are 0 until
    sum_over_dp adds the other ranks' shares) and runs as many forwards as every other rank, even with an
    empty share (the forward of a sharded model is a collective)."""
    task, _, _ = _task(tmp_path, tok_dir, hf_base, "task.reference=precomputed", "train.micro_batch_size=1",
                       start=False)
    split, cpu = task.splits[0], torch.device("cpu")
    forwards = []
    reference_logps = task._reference_logps
    task._reference_logps = lambda batch, model: forwards.append(batch) or reference_logps(batch, model)
    whole = task._precompute(split, _trainer().par, cpu)
    assert whole.shape == (4, 2) and bool((whole < 0).all())
    for rank, rows in enumerate([[0, 1], [2, 3], []]):  # 4 pairs over 3 ranks: shares of 2, 2 and 0
        forwards.clear()
        part = task._precompute(split, _trainer(rank, 3).par, cpu)
        mine = torch.zeros(4, dtype=torch.bool)
        mine[rows] = True
        torch.testing.assert_close(part[mine], whole[mine], rtol=1e-6, atol=1e-6)
        assert bool((part[~mine] == 0).all()) and len(forwards) == 2, (rank, forwards)


def test_lora_reference_is_the_base_with_adapters_disabled(tmp_path, tok_dir, hf_base):
    from llmctl.core.nn.loading import load_model

    task, train, model = _task(tmp_path, tok_dir, hf_base, "task.lora.r=4")
    assert task.reference is None and task.lora is not None
    _perturb(model)  # moves the adapters only (the base is frozen)
    b = task.collate([train[i] for i in range(4)])
    base = load_model(hf_base, device="cpu").model
    with torch.no_grad():
        want = answer_logps(base, b)[0]
        torch.testing.assert_close(task._reference_logps(b), want)
        assert not torch.allclose(answer_logps(model, b)[0], want)
