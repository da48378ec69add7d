"""The sft task: padding-free and neat-packed batches give the loss (and grads) of the same samples padded,
no attention crosses a sample boundary, dynamic padding, and full finetuning runs on the driver."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from finetune_helpers import QA, finetune_cfg, read_jsonl, sft_data
from llmctl.core.nn.loading import load_model
from llmctl.core.errors import UserError
from llmctl.core.train.task import next_token_loss
from llmctl.finetune.batching import (document_rows, documents_batch, model_inputs, padded_batch,
                                      sample_documents, shifted)
from llmctl.finetune.sft import SFTTask


@torch.no_grad()
def _per_sample_losses(model, batch):
    """(sum, count) of the loss per sample (a padded row, or a document of a padding-free row), keyed by the
    sample's label tokens."""
    per_token = model(batch["input_ids"], batch["labels"], **model_inputs(batch))
    labels = batch["labels"]
    if "documents" in batch:
        docs = batch["documents"]
        per_token, labels = per_token.reshape(-1).split(docs), labels.reshape(-1).split(docs)
    out = {}
    for loss, lab in zip(per_token, labels):
        sel = lab != -100
        if sel.any():
            out[tuple(lab[sel].tolist())] = (float(loss[sel].sum()), int(sel.sum()))
    return out


def _dataset(prefix):
    from llmctl.core.plugins import lookup

    return lookup("datasets", "sft")(prefix, seq_len=64)


def _padded(samples):
    return padded_batch([(s["input_ids"], s["labels"]) for s in samples], 0,
                        max(len(s["input_ids"]) for s in samples))


def _padding_free(samples, multiple=1):
    return documents_batch([shifted(*d) for s in samples for d in sample_documents(s)], 0, multiple)


def test_padding_free_neat_packed_and_padded_give_the_same_losses_and_plain_pack_differs(tmp_path, tok_dir,
                                                                                         hf_base):
    model = load_model(hf_base, device="cpu").model
    plain = _dataset(sft_data(tmp_path, tok_dir, name="plain"))
    neat = _dataset(sft_data(tmp_path, tok_dir, "--neat-pack", name="neat"))
    packed = _dataset(sft_data(tmp_path, tok_dir, "--pack", name="pack"))
    assert len(neat) < len(plain) == len(QA)

    samples = [plain[i] for i in range(len(plain))]
    want = _per_sample_losses(model, _padded(samples))
    total = sum(v[0] for v in want.values()), sum(v[1] for v in want.values())
    neat_rows = [neat[i] for i in range(len(neat))]
    for got in (_per_sample_losses(model, _padding_free(samples, multiple=8)),
                _per_sample_losses(model, _padding_free(neat_rows))):
        assert set(got) == set(want)
        for key, (loss, n) in want.items():
            assert got[key][1] == n
            assert got[key][0] == pytest.approx(loss, rel=1e-5, abs=1e-5)
        assert sum(v[0] for v in got.values()) == pytest.approx(total[0], rel=1e-5)
    # pipeline parallelism's rows: one data.seq_length row per neat-packed sample, its segments inside it
    rows = document_rows([[shifted(*d) for d in sample_documents(s)] for s in neat_rows], 0, 64)
    assert rows["input_ids"].shape == (len(neat_rows), 64)
    got = _per_sample_losses(model, rows)
    assert set(got) == set(want)
    for key, (loss, n) in want.items():
        assert got[key][1] == n and got[key][0] == pytest.approx(loss, rel=1e-5, abs=1e-5)
    with pytest.raises(UserError, match="more than data.seq_length 16"):
        document_rows([[shifted(*d) for d in sample_documents(s)] for s in neat_rows], 0, 16)
    neat_batch = _padding_free(neat_rows)
    assert len(neat_batch["documents"]) == len(QA)  # every segment a document; the rows' padding dropped
    assert int(neat_batch["input_ids"].shape[1]) == sum(len(s["input_ids"]) - 1 for s in samples)

    # --pack keeps one sequence per row (MindSpeed's semantics): the first sample of a row sees only itself,
    # the later ones attend across the boundary, so their losses differ from unpacked.
    pack_batch = _padding_free([packed[i] for i in range(len(packed))])
    assert len(pack_batch["documents"]) == len(packed)
    per_token = model(pack_batch["input_ids"], pack_batch["labels"], **model_inputs(pack_batch))
    assert float(per_token.sum()) != pytest.approx(total[0], rel=1e-4)
    assert int((pack_batch["labels"] != -100).sum()) == total[1]


def test_padding_free_loss_and_grads_equal_padded(tmp_path, tok_dir, hf_base):
    """The trained quantities, not only the loss: the summed loss, the trained-token count and every
    weight's gradient of a padding-free micro-batch equal the padded one's; and `loss_at` (the LM head on
    trained positions only) changes nothing."""
    plain = _dataset(sft_data(tmp_path, tok_dir, name="plain"))
    samples = [plain[i] for i in range(len(plain))]
    grads, sums = [], []
    for batch in (_padded(samples), _padding_free(samples, multiple=8)):
        model = load_model(hf_base, device="cpu").model
        per_token, loss_sum, count = next_token_loss(model, batch["input_ids"], batch["labels"],
                                                     **model_inputs(batch))
        loss_sum.backward()
        sums.append((float(loss_sum), int(count)))
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert sums[0][1] == sums[1][1] and sums[0][0] == pytest.approx(sums[1][0], rel=1e-5)
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6, msg=name)
    free = _padding_free(samples, multiple=8)
    model = load_model(hf_base, device="cpu").model
    with torch.no_grad():
        everywhere = model(free["input_ids"], free["labels"], positions=free["positions"],
                           documents=free["documents"])
        torch.testing.assert_close(model(free["input_ids"], free["labels"], **model_inputs(free)), everywhere)
    assert len(free["loss_at"]) == sums[0][1] < free["input_ids"].shape[1]


def test_no_attention_crosses_a_document():
    """Changing the tokens of one sample of a padding-free row leaves the logits of the others unchanged."""
    from finetune_helpers import tiny_model_config
    from llmctl.core.nn.build import build_model

    torch.manual_seed(0)
    model = build_model(tiny_model_config(50))
    rng = np.random.default_rng(0)
    docs = [(rng.integers(0, 50, n), rng.integers(0, 50, n)) for n in (4, 5, 3, 2)]
    batch = documents_batch([shifted(*d) for d in docs], 0)
    assert batch["documents"] == (3, 4, 2, 1)
    assert batch["positions"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 0, 1, 0]]
    tokens, extra = batch["input_ids"], {"positions": batch["positions"], "documents": batch["documents"]}
    base = model(tokens, **extra)
    changed = tokens.clone()
    changed[0, 3:7] = (changed[0, 3:7] + 1) % 50
    after = model(changed, **extra)
    keep = torch.ones(10, dtype=torch.bool)
    keep[3:7] = False
    torch.testing.assert_close(after[0, keep], base[0, keep])
    assert not torch.allclose(after[0, ~keep], base[0, ~keep])
    # and the second sample alone (positions from 0) gives the same logits as inside the row
    alone = model(tokens[:, 3:7])
    torch.testing.assert_close(base[:, 3:7], alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="partition"):
        model(tokens, documents=(3, 4))


def test_a_document_continuing_a_prefix_sees_it_as_one_sequence():
    """Two answers continuing one shared prompt (`Documents(prefixes=)`, positions continuing it) get the
    logits each would get as prompt + answer alone; the prompt's own logits are unchanged."""
    from finetune_helpers import tiny_model_config

    from llmctl.core.nn.build import build_model
    from llmctl.core.nn.model import Documents

    torch.manual_seed(0)
    model = build_model(tiny_model_config(50))
    prompt, a, b = (torch.randint(0, 50, (1, n)) for n in (5, 4, 3))
    row = torch.cat([prompt, a, b], 1)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 7]])
    out = model(row, positions=positions, documents=Documents((5, 4, 3), (-1, 0, 0)))
    alone_a, alone_b = model(torch.cat([prompt, a], 1)), model(torch.cat([prompt, b], 1))
    torch.testing.assert_close(out[:, :5], alone_a[:, :5], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, 5:9], alone_a[:, 5:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, 9:], alone_b[:, 5:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="earlier document"):
        Documents((5, 4), (1, -1))


def test_dynamic_padding(tmp_path, tok_dir, hf_base):
    cfg = finetune_cfg(tmp_path, hf_base, sft_data(tmp_path, tok_dir), "full")
    task = SFTTask(cfg)
    train, _ = task.build_datasets(8, 0)
    samples = [train[i] for i in range(2)]
    free = task.collate(samples)  # default: padding-free, rounded up to pad_to_multiple_of
    real = sum(len(s["input_ids"]) - 1 for s in samples)
    assert task.batch_tokens(free) == real  # what the run log's tokens_per_s counts: never the padding
    assert free["input_ids"].shape == (1, -(-real // 8) * 8) and sum(free["documents"]) == free["input_ids"].shape[1]
    task.cfg.parallel["tp"] = 3  # sequence parallelism shards the row over the TP ranks
    assert task.collate(samples)["input_ids"].shape[1] == -(-real // 24) * 24
    task.cfg.parallel["tp"] = 1
    task.options.padding_free = False
    batch = task.collate(samples)
    longest = max(len(s["input_ids"]) for s in samples)
    assert batch["input_ids"].shape[1] < 63 and batch["input_ids"].shape[1] >= longest - 1
    assert batch["input_ids"].shape[1] % 8 == 0
    assert task.batch_tokens(batch) == real < batch["input_ids"].numel()
    task.options.variable_seq_lengths = False
    assert task.collate(samples)["input_ids"].shape[1] == 63
    assert task.batch_tokens(task.collate(samples)) == real


def test_full_finetune_runs_on_the_driver(tmp_path, tok_dir, native_base):
    from llmctl.core.train.loop import pretrain

    class CountTokens:  # each step's real tokens, as the task counts them for the log
        steps: list[list[int]] = []

        def on_train_start(self, trainer):
            count = trainer.task.batch_tokens

            def counted(batch):
                self.steps[-1].append(count(batch))
                return self.steps[-1][-1]

            trainer.task.batch_tokens = counted

        def on_step_start(self, trainer, step):
            self.steps.append([])

    counter = CountTokens()
    cfg = finetune_cfg(tmp_path, native_base, sft_data(tmp_path, tok_dir), "full", "train.train_iters=6")
    assert cfg.train.task == "sft"
    result = pretrain(cfg, callbacks=[counter])
    log = [r for r in read_jsonl(result.log_path) if "loss" in r]
    assert log[-1]["loss"] < log[0]["loss"]
    # tokens_per_s counts the real tokens (GBS x seq_length would be 4 x 64 per step)
    assert len(counter.steps) == len(log) == 6 and all(len(s) == 2 for s in counter.steps)
    for rec, step in zip(log, counter.steps):
        assert rec["tokens_per_s"] * rec["step_ms"] / 1000 == pytest.approx(sum(step), rel=1e-6)
        assert sum(step) < 4 * 64
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
