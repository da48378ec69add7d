"""Loss-spike guards on the training loss and the per-source (channel) losses. Documents the test writes into
one source of a two-source blend at known positions — all newlines (the loss collapses: dirty data is often
abnormally easy) in the global batch of step 24, random bytes (the loss jumps) in that of step 32 — are
detected in the right direction at the right step, logged with the sample positions, which `llmctl data
inspect --positions` turns back into the very documents written; `warn` trains through them, `skip` drops
those updates, `rollback` reloads the last checkpoint and skips the data, ending on the curve of a run whose
data never had them (within noise). The guard itself: z-score and ratio, per direction, per channel."""

from __future__ import annotations

import json
import shlex
import statistics

import numpy as np
import pytest
import torch

from llmctl.core.train import load_train_config, pretrain
from llmctl.core.train.config import LossSpikeConfig, SpikeDirection
from llmctl.core.train.guards import LossSpikeGuard

NEWLINE, GBS, ITERS, DOWN_STEP, UP_STEP = 10, 4, 40, 24, 32


def _natural(rng, n: int = 64) -> np.ndarray:
    """Text-like unigram statistics: a newline a third of the time, else one of 89 other ids."""
    tokens = rng.integers(11, 100, n)
    tokens[rng.random(n) < 0.3] = NEWLINE
    return tokens


def _write(prefix, docs) -> None:
    from llmctl.core.mmidx import IndexedDatasetBuilder

    for split in ("train", "val"):
        with IndexedDatasetBuilder(f"{prefix}_{split}", dtype=np.uint16) as builder:
            for doc in docs:
                builder.add_document(doc)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Sources A and B of 64-token documents (so a sample is one document), and A spiked: the A documents
    the batches of steps 24 and 32 read replaced by all-newline and random-byte ones of the same length (the
    sample order depends on lengths and the seed only, so every other sample stays where it was)."""
    from llmctl.data.gpt_dataset import build_gpt_dataset

    root = tmp_path_factory.mktemp("spikes")
    rng = np.random.default_rng(0)
    docs = {"A": [_natural(rng) for _ in range(90)], "B": [_natural(rng) for _ in range(90)]}
    for name in ("clean", "spiked"):
        (root / name).mkdir()
    _write(root / "clean" / "A", docs["A"])
    _write(root / "B", docs["B"])
    blend = lambda a: f"0.5 {a} 0.5 {root / 'B'}"  # noqa: E731
    ds = build_gpt_dataset(blend(root / "clean" / "A"), 64, GBS * ITERS, 1234, "train")
    bad, spiked, noise = {}, list(docs["A"]), np.random.default_rng(1)
    for step in (DOWN_STEP, UP_STEP):
        for p in range((step - 1) * GBS, step * GBS):
            where = ds.locate(p)
            if where["source"] == str(root / "clean" / "A"):
                doc = where["documents"][0]["document"]
                bad.setdefault(step, {})[p] = doc
                # distinct first tokens: identical documents would be spread apart, moving every sample
                spiked[doc] = (np.concatenate([[11 + len(bad[step])], np.full(63, NEWLINE)]) if step == DOWN_STEP
                               else noise.integers(100, 1024, 64))
    _write(root / "spiked" / "A", spiked)
    check = build_gpt_dataset(blend(root / "spiked" / "A"), 64, GBS * ITERS, 1234, "train")
    for p, doc in {**bad[DOWN_STEP], **bad[UP_STEP]}.items():
        assert check.locate(p)["documents"][0]["document"] == doc
    assert all(len(bad[s]) == 2 for s in bad)  # half of each bad batch: A's two samples
    return {"root": root, "clean": blend(root / "clean" / "A"), "spiked": blend(root / "spiked" / "A"),
            "bad": bad, "A": str(root / "spiked" / "A")}


def _run(corpora, name: str, data: str, action: str) -> list[dict]:
    root = corpora["root"] / name
    sets = [f"data.path={corpora[data]}", "data.seq_length=64", f"train.train_iters={ITERS}",
            f"train.global_batch_size={GBS}", "train.micro_batch_size=2", "train.lr=3e-3", "train.warmup_iters=2",
            "train.schedule=constant", "eval.iters=0", f"checkpoint.dir={root / 'ckpt'}", "checkpoint.interval=10",
            f"logging.dir={root / 'logs'}", "logging.name=run", "logging.interval=1",
            "guards.loss_spike.window=16", "guards.loss_spike.min_history=8",
            f"guards.loss_spike.up={{threshold: 4, action: {action}}}",
            f"guards.loss_spike.down={{threshold: 4, action: {action}}}"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(load_train_config("tiny", sets), echo=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    return [json.loads(x) for x in (root / "logs" / "run.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(corpora):
    cache = {}

    def get(name: str):
        if name not in cache:
            data, action = {"clean": ("clean", "warn"), "warn": ("spiked", "warn"), "skip": ("spiked", "skip"),
                            "rollback": ("spiked", "rollback")}[name]
            cache[name] = _run(corpora, name, data, action)
        return cache[name]
    return get


def _losses(recs) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in recs if "lr" in r and "event" not in r}


def _spikes(recs) -> list[dict]:
    return [r for r in recs if r.get("event") == "loss_spike"]


def test_clean_data_raises_no_spike(runs):
    assert _spikes(runs("clean")) == []


@pytest.mark.parametrize("action", ["warn", "skip"])
def test_spiked_documents_are_detected_at_their_step_in_their_direction(action, runs, corpora, cli):
    recs = runs(action)
    spikes = _spikes(recs)
    assert {(s["step"], s["direction"]) for s in spikes} == {(DOWN_STEP, "down"), (UP_STEP, "up")}, spikes
    assert {s["action"] for s in spikes} == {action}
    bad = corpora["bad"]
    for step, direction in ((DOWN_STEP, "down"), (UP_STEP, "up")):
        (channel,) = [s for s in spikes if s["step"] == step and s["channel"] == f"loss/{corpora['A'].split('/')[-1]}"]
        assert channel["direction"] == direction
        assert channel["sample_positions"] == [(step - 1) * GBS, step * GBS]
        assert channel["channel_positions"] == sorted(bad[step])  # A's samples of that batch
        # the logged command finds the documents the test wrote
        code, out, err = cli(*shlex.split(channel["inspect"])[1:])
        assert code == 0, err
        for p, doc in bad[step].items():
            assert f"position {p}: {corpora['A']}_train sample" in out and f"document {doc} tokens 0-64" in out
    losses = _losses(recs)
    if action == "warn":  # trained through: the step's loss is the dirty batch's
        assert losses[DOWN_STEP] < losses[DOWN_STEP - 1] - 0.8 and losses[UP_STEP] > losses[UP_STEP - 1] + 2
    else:
        skips = [r for r in recs if r.get("event") == "skip"]
        assert [r["step"] for r in skips] == [DOWN_STEP, UP_STEP]
        assert all(r["reason"].startswith("loss spike: ") for r in skips)
        assert sum(r["skipped"] for r in recs if "skipped" in r and "lr" in r) == 2


def test_rollback_ends_on_the_clean_run_curve(runs, corpora):
    recs, clean = runs("rollback"), _losses(runs("clean"))
    rollbacks = [r for r in recs if r.get("event") == "rollback"]
    assert [(r["step"], r["to_iteration"]) for r in rollbacks] == [(DOWN_STEP, 20), (28, 20)]
    # after the first rollback the data continues past step 24's batch, so step 32's batch arrives at step 28
    assert [r["data_position"] for r in rollbacks] == [DOWN_STEP * GBS, UP_STEP * GBS]
    assert {(s["step"], s["direction"]) for s in _spikes(recs)} == {(DOWN_STEP, "down"), (28, "up")}
    losses = _losses(recs)
    assert sorted(losses) == list(range(1, ITERS + 1))  # the last record of each step is what stays
    tail = range(ITERS - 11, ITERS + 1)
    noise = statistics.pstdev([clean[s] - clean[s - 1] for s in tail]) / len(tail) ** 0.5
    diff = statistics.fmean(losses[s] for s in tail) - statistics.fmean(clean[s] for s in tail)
    assert abs(diff) < max(3 * noise, 0.05), (diff, noise)
    assert max(losses[s] for s in range(21, ITERS + 1)) < clean[10]  # no dirty batch was ever trained on


def _guard(method="zscore", up=4.0, down=4.0, action="warn", **kw):
    return LossSpikeGuard(LossSpikeConfig(method=method, window=8, min_history=4,
                                          up=SpikeDirection(up, action), down=SpikeDirection(down, "skip"), **kw))


def test_guard_zscore_and_ratio_per_direction_and_channel():
    g = _guard()
    for v in (3.0, 3.1, 2.9, 3.05, 2.95):
        assert g.check({"loss": v, "loss/web": v + 1}) == []
        g.accept()
    (s,) = g.check({"loss": 3.02, "loss/web": 9.0})  # only the channel jumped
    assert (s.channel, s.direction, s.action) == ("loss/web", "up", "warn") and s.score > 4
    spikes = g.check({"loss": 1.0, "loss/web": 4.0})
    assert [(x.channel, x.direction, x.action) for x in spikes] == [("loss", "down", "skip")]
    assert _guard(up=0).check({"loss": 9.0}) == []  # too little history yet; and a direction can be off
    r = _guard("ratio", up=1.5, down=1.5)
    for v in (3.0, 3.0, 3.0, 3.0):
        r.check({"loss": v})
        r.accept()
    assert r.check({"loss": 4.4}) == [] and [x.direction for x in r.check({"loss": 4.6})] == ["up"]
    assert [x.direction for x in r.check({"loss": 1.9})] == ["down"]
    assert [x.score for x in r.check({"loss": 6.0})] == [2.0]
    state = r.state()
    assert LossSpikeGuard(r.cfg, state).state() == state  # what a checkpoint keeps


def test_bad_spike_settings_are_one_line(tmp_path, cli):
    for extra, message in ((["guards.loss_spike.up.action=stop"], "'stop' is not one of warn, skip, rollback"),
                           (["guards.loss_spike.method=mad"], "'mad' is not one of zscore, ratio"),
                           (["guards.loss_spike.method=ratio", "guards.loss_spike.down.threshold=0.5"],
                            "a ratio threshold must be > 1"),
                           (["guards.loss_spike.windw=3"], "did you mean 'window'?")):
        code, _, err = cli("pretrain", "-c", "tiny", "--set", f"data.path={tmp_path}/x",
                           *[a for e in extra for a in ("--set", e)])
        assert code == 2 and err.count("\n") == 1 and message in err, err
