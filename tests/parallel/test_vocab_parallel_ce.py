"""The tensor-parallel cross-entropy (vocab-parallel, chunked over tokens) never materialises logits over the
whole vocabulary, nor even over all tokens of a rank's vocab shard: with the vocab split over 2 gloo ranks,
no op in forward or backward creates a tensor with a full-vocab dim other than the weight's own [V, H]
(its gradient), and none of [N, V/2]; the per-chunk local logits [chunk, V/2] are what it computes. Loss
and gradients equal F.cross_entropy over the full logits (with -100 targets and a non-uniform upstream
gradient). With a padded vocabulary (the rows past vocab_size, their logits forced high) they equal
F.cross_entropy over the real rows, whether a shard holds some padding or only padding, and the padding's
gradient is zero."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_helpers import child_env, run_tree, torchrun

WORKER = Path(__file__).with_name("vocab_ce_worker.py")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab-ce") / "report.json"
    cmd = [*torchrun(2)[:-2], str(WORKER), str(out)]  # torchrun's launcher, this worker instead of the CLI
    done = run_tree(cmd, child_env(), timeout=120)
    assert done.returncode == 0, done.stdout[-4000:]
    return json.loads(out.read_text())


def test_no_full_vocab_logits(report):
    v, n, chunk = report["V"], report["N"], report["chunk"]
    local = v // report["world"]
    seen = {tuple(s) for s in report["seen"]}
    assert (chunk, local) in seen  # the recorder saw the per-chunk local logits
    full_vocab = sorted(s for s in seen if v in s and s != (v, 16))
    assert not full_vocab, f"tensors over the whole vocabulary: {full_vocab}"
    assert (n, local) not in seen and (n, v) not in seen


def test_loss_and_grads_equal_full_logits_cross_entropy(report):
    assert report["loss_dtype"] == "torch.float32"
    assert report["loss_diff"] < 1e-5
    assert report["hidden_grad_diff"] < 1e-5
    assert report["weight_grad_diff"] < 1e-5


@pytest.mark.parametrize("real", ["53", "40"])
def test_padded_rows_are_outside_the_softmax(report, real):
    case = report["padded"][real]
    assert case["loss_diff"] < 1e-5 and case["hidden_grad_diff"] < 1e-5 and case["weight_grad_diff"] < 1e-5, case
    assert case["padding_grad"] == 0.0
