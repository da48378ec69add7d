"""The sft task: packed and neat-packed batches give the loss of the same samples unpacked, no attention
crosses a neat-pack sample boundary, dynamic padding, and full finetuning runs on the driver."""

from __future__ import annotations

import pytest
import torch
from finetune_helpers import QA, finetune_cfg, read_jsonl, sft_data

from llmctl.core.nn.loading import load_model
from llmctl.finetune.sft import SFTTask, collate_sft, segment_positions


@torch.no_grad()
def _per_sample_losses(model, batch):
    """(sum, count) of the loss per original sample, keyed by the sample's label tokens."""
    extra = {k: batch[k] for k in ("segment_ids", "positions") if k in batch}
    per_token = model(batch["input_ids"], batch["labels"], **extra)
    seg = batch.get("segment_ids", torch.ones_like(batch["input_ids"]))
    out = {}
    for b in range(per_token.shape[0]):
        for s in seg[b].unique().tolist():
            sel = (seg[b] == s) & (batch["labels"][b] != -100)
            if sel.any():
                key = tuple(batch["labels"][b][sel].tolist())
                out[key] = (float(per_token[b][sel].sum()), int(sel.sum()))
    return out


def _dataset(prefix):
    from llmctl.core.plugins import lookup

    return lookup("datasets", "sft")(prefix, seq_len=64)


def test_neat_packed_equals_unpacked_and_plain_pack_differs(tmp_path, tok_dir, hf_base):
    model = load_model(hf_base, device="cpu").model
    plain = _dataset(sft_data(tmp_path, tok_dir, name="plain"))
    neat = _dataset(sft_data(tmp_path, tok_dir, "--neat-pack", name="neat"))
    packed = _dataset(sft_data(tmp_path, tok_dir, "--pack", name="pack"))
    assert len(neat) < len(plain) == len(QA)

    samples = [plain[i] for i in range(len(plain))]
    length = max(len(s["input_ids"]) for s in samples)
    want = _per_sample_losses(model, collate_sft(samples, 0, length))
    neat_batch = collate_sft([neat[i] for i in range(len(neat))], 0, 64)
    assert "segment_ids" in neat_batch
    got = _per_sample_losses(model, neat_batch)
    assert set(got) == set(want)
    for key, (loss, n) in want.items():
        assert got[key][1] == n
        assert got[key][0] == pytest.approx(loss, rel=1e-5, abs=1e-5)
    total = sum(v[0] for v in want.values()), sum(v[1] for v in want.values())
    assert sum(v[0] for v in got.values()) == pytest.approx(total[0], rel=1e-5)

    # --pack keeps one sequence per row (MindSpeed's semantics): the first sample of a row sees only itself,
    # the later ones attend across the boundary, so their losses differ from unpacked.
    pack_batch = collate_sft([packed[i] for i in range(len(packed))], 0, 64)
    assert "segment_ids" not in pack_batch
    per_token = model(pack_batch["input_ids"], pack_batch["labels"])
    assert float(per_token.sum()) != pytest.approx(total[0], rel=1e-4)
    assert int((pack_batch["labels"] != -100).sum()) == total[1]


def test_no_attention_crosses_a_segment():
    """Changing the tokens of one packed sample leaves the logits of the other samples unchanged."""
    from finetune_helpers import tiny_model_config

    from llmctl.core.nn.build import build_model

    torch.manual_seed(0)
    model = build_model(tiny_model_config(50))
    seg = torch.tensor([[1, 1, 1, 2, 2, 2, 2, 3, 3, 0]])
    tokens = torch.randint(0, 50, seg.shape)
    pos = segment_positions(seg)
    assert pos.tolist() == [[0, 1, 2, 0, 1, 2, 3, 0, 1, 0]]
    base = model(tokens, segment_ids=seg, positions=pos)
    changed = tokens.clone()
    changed[0, 3:7] = (changed[0, 3:7] + 1) % 50
    after = model(changed, segment_ids=seg, positions=pos)
    keep = (seg[0] != 2)
    torch.testing.assert_close(after[0, keep], base[0, keep])
    assert not torch.allclose(after[0, ~keep], base[0, ~keep])
    # and the second sample alone (positions from 0) gives the same logits as inside the pack
    alone = model(tokens[:, 3:7])
    torch.testing.assert_close(base[:, 3:7], alone, rtol=1e-5, atol=1e-5)


def test_dynamic_padding(tmp_path, tok_dir, hf_base):
    cfg = finetune_cfg(tmp_path, hf_base, sft_data(tmp_path, tok_dir), "full")
    task = SFTTask(cfg)
    train, _ = task.build_datasets(8, 0)
    samples = [train[i] for i in range(2)]
    batch = task.collate(samples)
    longest = max(len(s["input_ids"]) for s in samples)
    assert batch["input_ids"].shape[1] < 63 and batch["input_ids"].shape[1] >= longest - 1
    assert batch["input_ids"].shape[1] % 8 == 0
    task.options.variable_seq_lengths = False
    assert task.collate(samples)["input_ids"].shape[1] == 63


def test_full_finetune_runs_on_the_driver(tmp_path, tok_dir, native_base):
    from llmctl.core.train.loop import pretrain

    cfg = finetune_cfg(tmp_path, native_base, sft_data(tmp_path, tok_dir), "full", "train.train_iters=6")
    assert cfg.train.task == "sft"
    result = pretrain(cfg)
    log = [r for r in read_jsonl(result.log_path) if "loss" in r]
    assert log[-1]["loss"] < log[0]["loss"]
    loaded = load_model(result.checkpoint_dir, device="cpu")  # a complete model: every weight trained & saved
    assert loaded.config.family == "llama" and loaded.tokenizer is not None
    before = load_model(native_base, device="cpu").model.state_dict()
    after = loaded.model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before if k.endswith("proj.weight"))


def test_missing_validation_split_is_said_once_at_start(tmp_path, tok_dir, hf_base):
    """eval.iters asks for validation but `llmctl data sft` wrote no PREFIX_val files: one note in the run
    log before the first step (and none when eval.iters is 0)."""
    from llmctl.core.train.loop import pretrain

    prefix = sft_data(tmp_path, tok_dir)
    note = f"no validation split at {prefix}_val; eval skipped"
    for iters, expected in ((1, 1), (0, 0)):
        cfg = finetune_cfg(tmp_path, hf_base, prefix, "full", "train.train_iters=1", f"eval.iters={iters}",
                           name=f"eval{iters}")
        result = pretrain(cfg)
        text = result.log_path.with_suffix(".log").read_text()
        assert text.count(note) == expected, text
        assert result.val_loss is None
        if expected:
            assert text.index(note) < text.index(" iteration        1/")
