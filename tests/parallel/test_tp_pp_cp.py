"""The model-parallel strategy under torchrun (gloo, CPU, fp32): TP=2 with sequence parallelism, PP=2 with
1F1B and an uneven --num-layer-list (and GPipe, even), CP=2, and DP2xTP2 / PP2xTP2 / DP2xPP2 / fsdp2 at TP2
on 4 ranks (data parallelism and CP's grad sum by torch's fully_shard over the dp_cp mesh dim) give one
process's per-step losses, validation loss and final weights (and AdamW moments) on the same global batch.
Every run takes its odd vocabulary (69 ids) from the tokenizer: padded to 256 rows at TP2, 128 in one process,
the real rows equal and the padding zero. Their checkpoints reshard: saved at TP2, PP2, TP2xPP2 and DP2xTP2
they resume in one process (TP2's padding re-made for TP1); saved by one process they resume at PP2 and at
DP2xTP2, and in one process padded otherwise; the resumed runs continue with the uninterrupted run's losses.
A TP2 checkpoint exported to HF has the tokenizer's vocab_size and llmctl's logits in transformers. A
pipeline rank killed mid-save leaves the pointer on the last complete checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from engine_helpers import child_env, torchrun
from llmctl.core.nn.checkpoint import latest_iteration
from parallel_helpers import (
    ITERS,
    VOCAB,
    assert_losses_match,
    assert_same_state,
    cli_args,
    final_state,
    kill_tree,
    pretrain_in_process,
    rank_pid,
    sets,
)

pytestmark = pytest.mark.slow

# PP needs more than the tiny preset's 2 layers for an uneven split
PP_MODEL = ["model.num_layers=4"]
LAYOUTS = {
    "tp2-sp": (2, ["parallel.strategy=tp", "parallel.tp=2", "parallel.sequence_parallel=true"]),
    "cp2": (2, ["parallel.strategy=cp", "parallel.cp=2"]),
    "dp2-tp2": (4, ["parallel.strategy=tp", "parallel.tp=2"]),
    "pp2-1f1b": (2, [*PP_MODEL, "parallel.strategy=pp", "parallel.pp=2", "parallel.pp_schedule=1f1b",
                     "parallel.num_layer_list=1,3"]),
    "pp2-gpipe": (2, [*PP_MODEL, "parallel.strategy=pp", "parallel.pp=2", "parallel.pp_schedule=gpipe"]),
    "pp2-tp2": (4, [*PP_MODEL, "parallel.strategy=pp", "parallel.pp=2", "parallel.tp=2",
                    "parallel.num_layer_list=3,1"]),
    "dp2-pp2": (4, [*PP_MODEL, "parallel.strategy=pp", "parallel.pp=2", "parallel.num_layer_list=1,3"]),
    "fsdp2-tp2": (4, ["parallel.strategy=fsdp2", "parallel.tp=2"]),  # fsdp2 with tp: FSDP2 over dp + TP
}
# the layouts whose data parallelism (DP replicas, CP ranks) is torch's fully_shard over the dp_cp mesh dim
FSDP_OVER = {"cp2": 2, "dp2-tp2": 2, "dp2-pp2": 2, "fsdp2-tp2": 2}
# PP alone sums exactly like one process; TP/CP/DP reduce partial sums across ranks in another order, and at
# lr 1e-2 AdamW turns that 1e-7 grad noise into up to ~4e-5 on the few weights whose grads are near zero
REL = {"pp2-1f1b": 1e-5, "pp2-gpipe": 1e-5}
ATOL = {"pp2-1f1b": 1e-6, "pp2-gpipe": 1e-6}


@pytest.fixture(scope="module")
def pp_reference(corpus, tmp_path_factory):
    """The 1-process run of the 4-layer model the PP layouts split."""
    run = tmp_path_factory.mktemp("pp-reference")
    pretrain_in_process(sets(corpus, run, *PP_MODEL))
    return run


@pytest.fixture
def layout_run(dp_run, reference, pp_reference):
    """layout_run(name) -> (that layout's torchrun run, its 1-process reference)."""
    def run(name: str):
        nproc, overrides = LAYOUTS[name]
        return dp_run(name, *overrides, nproc=nproc), pp_reference if "pp" in name else reference
    return run


def val_losses(run) -> list[float]:
    return [r["val_loss"] for r in map(json.loads, (run / "logs" / "run.jsonl").read_text().splitlines())
            if "val_loss" in r]


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_equals_one_process(name, layout_run):
    run, ref = layout_run(name)
    rel = REL.get(name, 1e-4)
    assert_losses_match(run, ref, rel)
    assert val_losses(run) == pytest.approx(val_losses(ref), rel=rel) and val_losses(ref)
    got, want = final_state(run), final_state(ref)
    assert got["iteration"] == want["iteration"] == ITERS
    assert_same_state(got, want, rtol=1e-3, atol=ATOL.get(name, 1e-4))
    sharded = "data parallel: fully_shard over dp_cp"
    text = (run / "logs" / "run.log").read_text()
    assert (f"{sharded} {FSDP_OVER[name]}" in text) if name in FSDP_OVER else (sharded not in text)


@pytest.mark.parametrize("name", ["tp2-sp", "pp2-1f1b", "pp2-tp2", "dp2-tp2"])
def test_sharded_checkpoint_resumes_in_one_process(name, layout_run, corpus, tmp_path):
    """Saved at TP2 / PP2 / TP2xPP2 / DP2xTP2 (FSDP2 x TP: DTensors over (dp, tp)) at step 5, continued by one
    process (TP1 PP1)."""
    run, ref = layout_run(name)
    single = tmp_path / "single"
    extra = PP_MODEL if "pp" in name else []
    pretrain_in_process(sets(corpus, single, *extra), resume=str(run / "ckpt" / "iter_0000005"))
    assert_losses_match(single, ref, 1e-4, steps=range(6, ITERS + 1))
    assert_same_state(final_state(single), final_state(ref), rtol=1e-3, atol=ATOL.get(name, 1e-4))


@pytest.mark.parametrize("name", ["pp2-1f1b", "dp2-tp2"])
def test_one_process_checkpoint_resumes_sharded(name, dp_run, reference, pp_reference):
    """A one-process checkpoint loaded at PP2, and at DP2xTP2 (each whole tensor sliced to its FSDP x TP
    shard), continues with the uninterrupted run's losses."""
    nproc, overrides = LAYOUTS[name]
    ref = pp_reference if "pp" in name else reference
    run = dp_run(f"{name}-from-single", *overrides, nproc=nproc,
                 args=("--resume", str(ref / "ckpt" / "iter_0000005")))
    assert_losses_match(run, ref, REL.get(name, 1e-4), steps=range(6, ITERS + 1))
    assert_same_state(final_state(run), final_state(ref), rtol=1e-3, atol=ATOL.get(name, 1e-4))


@pytest.mark.parametrize("divisible_by", [1, 64])
def test_one_process_checkpoint_resumes_padded_otherwise(divisible_by, reference, corpus, tmp_path):
    """Saved padded to 128 rows, resumed with make_vocab_size_divisible_by 1 (69 rows: no padding) and 64
    (128 rows again): the weights and their AdamW moments are re-padded, the losses are the uninterrupted
    run's."""
    single = tmp_path / "single"
    pretrain_in_process(sets(corpus, single, f"model.make_vocab_size_divisible_by={divisible_by}"),
                        resume=str(reference / "ckpt" / "iter_0000005"))
    assert_losses_match(single, reference, 1e-5, steps=range(6, ITERS + 1))
    got = final_state(single)
    assert got["model"]["embed.weight"].shape[0] == (VOCAB if divisible_by == 1 else 128)
    assert_same_state(got, final_state(reference), rtol=1e-4, atol=1e-5)


def test_tp2_checkpoint_exports_the_tokenizers_vocabulary_to_hf(layout_run, tmp_path):
    """native-to-hf of a TP2 checkpoint (256 rows): config.vocab_size is the tokenizer's 69, transformers'
    logits are llmctl's on those rows."""
    import torch
    from llmctl.core.nn.convert import native_to_hf
    from llmctl.core.nn.loading import load_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, _ = layout_run("tp2-sp")
    native_to_hf(run / "ckpt", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.vocab_size == len(AutoTokenizer.from_pretrained(tmp_path / "hf")) == VOCAB
    ours = load_model(run / "ckpt", device="cpu")
    assert ours.model.embed.weight.shape[0] == 256 and ours.config.vocab_size == VOCAB
    tokens = torch.randint(3, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, ours.model(tokens), rtol=1e-4, atol=1e-4)


def test_stage_killed_mid_save_leaves_the_pointer_on_a_complete_checkpoint(corpus, pp_reference, test_plugins,
                                                                           tmp_path):
    """PP2: the last stage's rank is SIGKILLed while the writer holds iteration 10's gathered state on disk,
    unpublished; the pointer stays on 5, which one process resumes to the uninterrupted run's losses."""
    run = tmp_path / "midsave"
    proc = subprocess.Popen(torchrun(2, *cli_args(sets(corpus, run, *LAYOUTS["pp2-1f1b"][1]))),
                            env=child_env(test_plugins, LLMCTL_FAULTS=f"hang_at_save={ITERS}"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    written = run / "ckpt" / f".iter_{ITERS:07d}.tmp" / "mp_rank_00" / "model_optim_rng.pt"
    try:
        deadline = time.monotonic() + 180
        while not written.is_file():
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "timed out waiting for the save"
            time.sleep(0.05)
        os.kill(rank_pid(proc, 1), signal.SIGKILL)
        time.sleep(0.5)
    finally:
        kill_tree(proc)
    ckpt = run / "ckpt"
    assert latest_iteration(ckpt) == 5 and not (ckpt / f"iter_{ITERS:07d}").exists()
    pretrain_in_process(sets(corpus, run, *PP_MODEL), resume="auto")
    assert_losses_match(run, pp_reference, 1e-5, steps=range(6, ITERS + 1))
