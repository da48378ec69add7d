"""Perplexity against transformers: exp(mean token NLL) over the windows of HF's documented sliding-window
method ("Perplexity of fixed-length models"), computed from a transformers forward on the same tokens, with
and without a stride; the MMIDIDX reader against megatron-core's own writer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_helpers import FIXTURES

from llmctl.eval.ppl import read_indexed, sliding_windows

TEXT = FIXTURES / "text_corpus" / "tinyshakespeare" / "input.txt"


def hf_sliding_window_ppl(model, input_ids: torch.Tensor, max_length: int, stride: int) -> tuple[float, int]:
    """The windows of the transformers docs' loop (labels -100 outside each window's new tokens), with the NLL
    summed token by token from the transformers logits. (The docs weight each window's mean loss by
    `valid - 1`, which is exact only without a stride; here every scored token counts exactly once.)"""
    seq_len = input_ids.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        ids = input_ids[:, begin_loc:end_loc]
        target_ids = ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            logits = model(ids).logits.float()
        labels = target_ids[0, 1:]  # position t predicts token t + 1
        nll_sum += F.cross_entropy(logits[0, :-1], labels, ignore_index=-100, reduction="sum").item()
        n_tokens += int((labels != -100).sum())
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return math.exp(nll_sum / n_tokens), n_tokens


@pytest.fixture(scope="module")
def text_file(tmp_path_factory, real_fixtures):
    path = tmp_path_factory.mktemp("ppl") / "shakespeare.txt"
    path.write_text(TEXT.read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return path


@pytest.mark.parametrize("window,stride", [(128, 128), (128, 48)])
def test_text_ppl_matches_transformers(cli, tmp_path, hf_model_dir, hf_pair, text_file, window, stride):
    hf_model, hf_tok = hf_pair
    ids = hf_tok(text_file.read_text(encoding="utf-8"), return_tensors="pt").input_ids
    ref_ppl, ref_tokens = hf_sliding_window_ppl(hf_model, ids, window, stride)
    code, _, err = cli("eval", "run", "--task", "ppl", "--ckpt-dir", hf_model_dir, "--data-dir", text_file,
                       "--ppl-window", window, "--ppl-stride", stride, "--batch-size", 3, "--out-dir", tmp_path)
    assert code == 0, err
    metrics = json.loads((tmp_path / "results.json").read_text())["tasks"]["ppl"]["metrics"]
    assert metrics["tokens"] == ref_tokens
    assert metrics["ppl"] == pytest.approx(ref_ppl, rel=1e-5)


def test_windows_score_every_token_once():
    for n, window, stride in [(1000, 128, 128), (1000, 128, 48), (129, 128, 128), (5, 8, 3)]:
        scored = [i for w in sliding_windows(n, window, stride) for i in range(w.score_from, w.end)]
        assert len(scored) == len(set(scored))
        if stride < window:
            assert scored == list(range(1, n))


def test_mmidx_reader_and_ppl_on_megatron_dataset(cli, tmp_path, hf_model_dir, hf_pair):
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

    hf_model, hf_tok = hf_pair
    lines = [line for line in TEXT.read_text(encoding="utf-8").splitlines() if line.strip()][:60]
    docs = [hf_tok(line).input_ids + [hf_tok.eos_token_id] for line in lines]
    prefix = tmp_path / "corpus_text_document"
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    for doc in docs:
        builder.add_item(torch.tensor(doc))
        builder.end_document()
    builder.finalize(f"{prefix}.idx")

    ours = read_indexed(prefix)
    theirs = IndexedDataset(str(prefix))
    assert len(ours) == len(theirs) == len(docs)
    for i in range(len(docs)):
        assert np.array_equal(ours[i], theirs[i]) and ours[i].tolist() == docs[i]
    assert [d.tolist() for d in read_indexed(prefix, limit=7)] == docs[:7]

    stream = torch.tensor([t for d in docs[:40] for t in d])[None]
    ref_ppl, ref_tokens = hf_sliding_window_ppl(hf_model, stream, 96, 64)
    code, _, err = cli("eval", "run", "--task", "ppl", "--ckpt-dir", hf_model_dir, "--data-dir", f"ppl={prefix}.idx",
                       "--limit", 40, "--ppl-window", 96, "--ppl-stride", 64, "--out-dir", tmp_path / "out")
    assert code == 0, err
    task = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"]["ppl"]
    assert task["metrics"]["tokens"] == ref_tokens and task["metrics"]["documents"] == 40
    assert task["metrics"]["ppl"] == pytest.approx(ref_ppl, rel=1e-5)
    assert task["data_sha256"] and task["data_files"] == 2


def test_ppl_bad_input(cli, tmp_path, hf_model_dir):
    (tmp_path / "x.idx").write_bytes(b"NOTMAGIC" + bytes(40))
    (tmp_path / "x.bin").write_bytes(bytes(8))
    code, _, err = cli("eval", "run", "--task", "ppl", "--ckpt-dir", hf_model_dir, "--data-dir", tmp_path / "x",
                       "--out-dir", tmp_path / "out")
    assert code == 2 and "not a Megatron MMIDIDX index" in err
    code, _, err = cli("eval", "run", "--task", "ppl", "--ckpt-dir", hf_model_dir, "--data-dir", tmp_path / "nope",
                       "--out-dir", tmp_path / "out")
    assert code == 2 and "perplexity data not found" in err
    (tmp_path / "t.txt").write_text("to be or not to be", encoding="utf-8")
    code, _, err = cli("eval", "run", "--task", "ppl", "--ckpt-dir", hf_model_dir, "--data-dir", tmp_path / "t.txt",
                       "--ppl-window", 4096, "--out-dir", tmp_path / "out")
    assert code == 2 and "exceeds the model's max_seq_len 2048" in err
