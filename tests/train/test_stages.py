"""Pretraining in stages, one process (the `tiny-staged` preset: seq 64 / RoPE base 1e4 on web + code, then
seq 128 / base 1e5 on books + web, then a 1-sqrt anneal on hq): the run follows its plan (stage names,
LR segments, each stage's blend realised within 2% of tokens), a resume inside stage 2 and exactly at the
2 -> 3 boundary gives the uninterrupted run's losses and weights bit for bit, the RoPE change is real (logits
of a freshly built model with the new base and length from the same weights), `--from CKPT --stage anneal`
from two stage-1 checkpoints gives two anneal runs whose logs name their origin, held-out PPL by domain
equals `llmctl eval run --task ppl` on the saved checkpoints, `llmctl plot` reads the stages back, and bad
stage configs are one line, exit 2, before any model work."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch
from stage_helpers import cli_args, events, pretrain_here, records, staged_sets, train_records

from llmctl.core.nn.checkpoint import load_checkpoint

LR = 3e-3
STAGES = {"stable": (1, 20), "long": (21, 30), "anneal": (31, 40)}
WEIGHTS = {"stable": {"web": 0.5, "code": 0.5}, "long": {"books": 0.7, "web": 0.3}, "anneal": {"hq": 1.0}}


def expected_lr(step: int) -> float:
    if step <= 4:
        return LR * step / 4  # the run's warmup: stage 1's
    if step <= 30:
        return LR  # constant through stable and long
    k = step - 30
    return LR * (1 - math.sqrt(k / 10)) if k < 10 else 0.0  # anneal: 1-sqrt to 0 over its 10 steps


def stage_of(step: int) -> str:
    return next(name for name, (a, b) in STAGES.items() if a <= step <= b)


def test_three_stage_run_follows_its_plan(staged_reference):
    recs = train_records(staged_reference)
    assert sorted(recs) == list(range(1, 41))
    for step, r in recs.items():
        assert r["stage"] == stage_of(step), step
        assert r["lr"] == pytest.approx(expected_lr(step), rel=1e-12, abs=1e-15), step
        assert r["consumed_tokens"] == 512 * step  # 8 x 64, then 4 x 128: the same tokens per step
        assert math.isfinite(r["loss"])
    for name, (a, b) in STAGES.items():  # each stage learns its own data
        assert recs[b]["loss"] < recs[a]["loss"] - 0.3, name
    # channels are every stage's sources; a stage's loss/<source> only for the sources it reads
    assert recs[25]["loss/books"] is not None and recs[25]["loss/code"] is None and recs[35]["loss/hq"]
    ends = {e["stage"]: e for e in events(staged_reference, "stage_end")}
    assert [ends[n]["step"] for n in STAGES] == [20, 30, 40]
    for name, weights in WEIGHTS.items():
        share = ends[name]["share"]
        assert share.keys() == weights.keys()
        for source, w in weights.items():
            assert abs(share[source] - w) <= 0.02, (name, share)
    starts = events(staged_reference, "stage")
    assert [(e["stage"], e["seq_length"], e["rope_theta"], e["global_batch_size"]) for e in starts] == [
        ("stable", 64, 1e4, 8), ("long", 128, 1e5, 4), ("anneal", 128, 1e5, 4)]
    assert starts[2]["data_position"] == 0  # hq was never read before the anneal


def test_megatron_lines_carry_the_stage_and_plot_reads_them(staged_reference, tmp_path, cli):
    from llmctl.core.plot import read_log

    text = (staged_reference / "logs" / "run.log").read_text()
    line = next(x for x in text.splitlines() if "iteration       25/      40" in x)
    for field in ("consumed samples:", "elapsed time per iteration (ms):", "learning rate:", "lm loss:",
                  "global batch size:     4", "stage: long |"):
        assert field in line
    a, b = read_log(staged_reference / "logs" / "run.jsonl"), read_log(staged_reference / "logs" / "run.log")
    recs = train_records(staged_reference)
    for c in (a, b):
        assert c.step == list(range(1, 41)) and c.stage == [stage_of(s) for s in c.step]
        assert c.tokens == [512 * s for s in c.step]
        assert c.loss == pytest.approx([recs[s]["loss"] for s in c.step], rel=1e-6)
        assert c.stage_boundaries() == [(512 * 20, "long"), (512 * 30, "anneal")]
        assert sorted(c.sets) == ["code", "wiki"] and len(c.sets["wiki"][1]) == 4
    out = tmp_path / "curves.png"
    code, stdout, err = cli("plot", "curves", staged_reference / "logs" / "run.jsonl",
                            staged_reference / "logs" / "run.log", "--output", out)
    assert code == 0, err
    mpimg = pytest.importorskip("matplotlib.image")
    img = mpimg.imread(out)
    assert img.shape[1] > 1500 and img.std() > 0  # four panels: loss, LR by stage, throughput, held-out PPL


@pytest.mark.parametrize("stop", [25, 30], ids=["inside-stage-2", "at-the-2-3-boundary"])
def test_resume_gives_the_uninterrupted_run(stop, staged_corpora, staged_reference, tmp_path):
    """Stopped after `stop` steps (its checkpoint then the last), resumed: every loss, and the final weights and
    optimizer moments, equal the uninterrupted run's bit for bit."""
    sets = staged_sets(staged_corpora, tmp_path)
    first = pretrain_here(sets, stop_at_step=stop)
    assert first.stopped_early and first.final_step == stop
    pretrain_here(sets, resume="auto")
    got, want = train_records(tmp_path), train_records(staged_reference)
    assert {s: got[s]["loss"] for s in want} == {s: want[s]["loss"] for s in want}
    assert [e["step"] for e in events(tmp_path, "resume")] == [stop]
    a, b = load_checkpoint(tmp_path / "ckpt")[0], load_checkpoint(staged_reference / "ckpt")[0]
    for name in b["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for i, moments in b["optimizer"]["state"].items():
        for key, value in moments.items():
            assert torch.equal(a["optimizer"]["state"][i][key], value), (i, key)
    assert a["train_state"]["data_positions"] == b["train_state"]["data_positions"]


class _Capture:
    """At the first step of stages 2 and 3: the trained model's logits on a batch of the stage's length."""

    def __init__(self):
        self.seen = {}

    def on_step_start(self, trainer, step):
        if step in (20, 21, 31):
            model = trainer.par.unwrap(trainer.module)
            tokens = torch.randint(3, 700, (2, trainer.seq), generator=torch.Generator().manual_seed(step))
            with torch.no_grad():
                self.seen[step] = (dataclasses.replace(model.cfg), {k: v.clone() for k, v in
                                   model.state_dict().items()}, tokens, model(tokens))


def test_the_rope_change_is_real(staged_corpora, staged_reference, tmp_path):
    """After the boundary the trained model's logits equal those of a model built fresh with the new RoPE
    base and length from the same weights (and differ from the old base's)."""
    from llmctl.core.nn.build import build_model
    from llmctl.core.nn.loading import load_model

    capture = _Capture()
    pretrain_here(staged_sets(staged_corpora, tmp_path), stop_at_step=31, callbacks=[capture])
    cfg20, _, _, _ = capture.seen[20]
    assert (cfg20.rope_theta, cfg20.max_seq_len) == (1e4, 256)
    for step in (21, 31):
        cfg, state, tokens, logits = capture.seen[step]
        assert tokens.shape[1] == 128 and cfg.rope_theta == 1e5
        fresh = build_model(dataclasses.replace(cfg20, rope_theta=1e5), state=state).eval()
        torch.testing.assert_close(logits, fresh(tokens), rtol=0, atol=0)
        old = build_model(cfg20, state=state).eval()
        assert (old(tokens) - logits).abs().max() > 1e-3  # the base is not a no-op: the test can fail
    # checkpoints describe the model as their stage trained it: generate / eval rebuild it
    for iteration, theta in ((20, 1e4), (25, 1e5)):
        loaded = load_model(staged_reference / "ckpt", iteration=iteration)
        assert loaded.config.rope_theta == theta


def test_branch_anneal_from_two_stage1_checkpoints(staged_corpora, staged_reference, tmp_path, cli):
    origin = tmp_path / "origin"
    shutil.copytree(staged_reference / "ckpt", origin / "ckpt")
    sets = staged_sets(staged_corpora, origin)
    for n in (10, 20):
        code, out, err = cli(*cli_args(sets, "--from", origin / "ckpt" / f"iter_{n:07d}", "--stage", "anneal"))
        assert code == 0, err
        run = origin / f"ckpt_anneal_from_{n}"
        assert f"checkpoint {run}" in out
        log = origin / "logs" / f"ckpt_anneal_from_{n}.jsonl"
        recs = [json.loads(x) for x in log.read_text().splitlines()]
        (branch,) = [r for r in recs if r.get("event") == "branch"]
        assert branch["from"] == str(origin / "ckpt" / f"iter_{n:07d}") and branch["origin_run"] == "run"
        assert branch["iteration"] == n and branch["stage"] == "anneal"
        text = log.with_suffix(".log").read_text()
        assert f"branch of run run from {origin / 'ckpt' / f'iter_{n:07d}'} (iteration {n})" in text
        steps = {r["step"]: r for r in recs if "lr" in r and "event" not in r}
        assert sorted(steps) == list(range(n + 1, n + 11)) and {r["stage"] for r in steps.values()} == {"anneal"}
        for k in range(1, 11):
            want = LR * (1 - math.sqrt(k / 10)) if k < 10 else 0.0
            assert steps[n + k]["lr"] == pytest.approx(want, rel=1e-12, abs=1e-15)
        state, config, _ = load_checkpoint(run)
        assert state["iteration"] == n + 10 and config["branch"]["checkpoint"].endswith(f"iter_{n:07d}")
        assert config["model"]["rope_theta"] == 1e5  # the anneal's base, recorded with its weights
        assert state["train_state"]["data_positions"][f"{staged_corpora['hq']} @ seq 128"] == 40
    # the origin's checkpoints are untouched
    assert sorted(p.name for p in (origin / "ckpt").iterdir() if p.name.startswith("iter_")) == [
        f"iter_{i:07d}" for i in range(5, 41, 5)]


def test_heldout_ppl_by_domain_equals_eval_run(staged_corpora, staged_reference, tmp_path, cli):
    logged = {r["step"]: r for r in records(staged_reference) if "ppl/wiki" in r}
    assert sorted(logged) == [10, 20, 30, 40]  # every eval interval, and the end
    for r in logged.values():
        assert r["tokens/wiki"] > 1000 and r["tokens/code"] > 500 and 1 < r["ppl/code"] < 760
    assert logged[40]["ppl/wiki"] < logged[10]["ppl/wiki"]  # falls as the run trains on web
    text = (staged_reference / "logs" / "run.log").read_text()
    assert "heldout wiki PPL:" in text and "heldout code PPL:" in text
    for iteration in (20, 30, 40):  # seq 64 at 20 (window 65), seq 128 after (window 129)
        out = tmp_path / f"eval{iteration}"
        code, _, err = cli("eval", "run", "--task", "ppl", "--ckpt-dir", staged_reference / "ckpt",
                           "--iteration", iteration, "--out-dir", out)
        assert code == 0, err
        metrics = json.loads((out / "results.json").read_text())["tasks"]["ppl"]["metrics"]
        for name in ("wiki", "code"):
            assert metrics[f"tokens/{name}"] == logged[iteration][f"tokens/{name}"]
            assert metrics[f"ppl/{name}"] == pytest.approx(logged[iteration][f"ppl/{name}"], rel=1e-5)
    # one set named explicitly, with the run's window: the same number
    code, _, err = cli("eval", "run", "--task", "ppl", "--ckpt-dir", staged_reference / "ckpt", "--data-dir",
                       f"{staged_corpora['web']}_val", "--ppl-window", 129, "--out-dir", tmp_path / "one")
    assert code == 0, err
    metrics = json.loads((tmp_path / "one" / "results.json").read_text())["tasks"]["ppl"]["metrics"]
    assert metrics["ppl"] == pytest.approx(logged[40]["ppl/wiki"], rel=1e-5)


@pytest.mark.parametrize("extra,message", [
    (["train.train_iters=50"], "the stages add up to 40 iterations (stable 20 + long 10 + anneal 10) but "
                               "train.train_iters is 50"),
    (["train.tokens_per_step=null", "train.global_batch_size=8", "train.train_tokens=30000",
      "stages.stable.iters=null", "stages.stable.tokens=10240"],
     "the stages add up to 30720 tokens (stable 10240 + long 10240 + anneal 10240) but train.train_tokens is 30000"),
    (["stages.long.rope_theta=0"], "config key 'stages[1].rope_theta' must be > 0, got 0"),
    (["stages.anneal.rope_theta=-1e5"], "config key 'stages[2].rope_theta' must be > 0, got -100000.0"),
    (["model.rope_theta=0"], "config key 'model.rope_theta' must be > 0, got 0"),
    (["stages.long.seq_length=512"], "config key 'stages[1].seq_length': 512 exceeds model.max_seq_len 256 "
                                     "and the stage has no rope_scaling"),
    (["stages.long.blend="], "config key 'stages[1].blend' is empty"),
    (["stages.anneal.blend=[]"], "config key 'stages[2].blend' is empty"),
    (["stages.anneal.name=long"], "config key 'stages[2].name': 'long' is already the name of stages[1]"),
    (["stages.long.rope_thta=1e5"], "unknown config key 'stages[1].rope_thta' (did you mean 'rope_theta'?)"),
    (["stages.anneal.decay_style=sqrt"], "'sqrt' is not one of linear, cosine, 1-sqrt"),
    (["stages.long.iters=null"], "stage 'long' needs a length: 'iters' or 'tokens'"),
    (["stages.lng.iters=3"], "no entry named 'lng' (did you mean 'long'?)"),
])
def test_bad_stage_configs_are_one_line_before_any_model_work(extra, message, staged_corpora, tmp_path, cli):
    code, out, err = cli(*cli_args(staged_sets(staged_corpora, tmp_path, *extra)))
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "logs").exists() and not (tmp_path / "ckpt").exists()  # nothing started


def test_a_branch_needs_a_stage_that_starts_after_its_checkpoint(staged_corpora, staged_reference, tmp_path, cli):
    sets = staged_sets(staged_corpora, tmp_path)
    cases = [(["--from", staged_reference / "ckpt" / "iter_0000035", "--stage", "long"],
              "is at iteration 35, past the start of stage 'long' (iteration 21)"),
             (["--from", staged_reference / "ckpt", "--stage", "anneel"], "no such stage (did you mean 'anneal'?)"),
             (["--from", tmp_path / "nowhere", "--stage", "anneal"], "no such checkpoint"),
             (["--stage", "anneal"], "--from CKPT_DIR and --stage NAME go together")]
    for args, message in cases:
        code, _, err = cli(*cli_args(sets, *[str(a) for a in args]))
        assert code == 2 and err.count("\n") == 1 and message in err, err


# ---- curriculum inside a stage ----------------------------------------------------------------------------
def test_curriculum_orders_each_source_and_keeps_the_blend(staged_corpora):
    import numpy as np

    from llmctl.data.gpt_dataset import build_gpt_dataset

    c = staged_corpora
    spec = f"0.5 {c['web']} 0.5 {c['code']}"
    plain = build_gpt_dataset(spec, 64, 160, 1234)
    ascending = build_gpt_dataset(spec, 64, 160, 1234, curriculum={"by": "length", "order": "ascending"})
    assert (ascending.sample_sources == plain.sample_sources).all()  # the mix at every step is the blend's
    for s in range(2):
        at = [i for i in range(160) if plain.sample_sources[i] == s]
        keys = [ascending.key(i) for i in at]
        assert keys == sorted(keys) and len(set(keys)) > 10
        # the key is the token-weighted mean length of the documents a sample holds
        lengths = ascending.datasets[s].data.sequence_lengths
        for i in at[:5]:
            docs = ascending.locate(i)["documents"]
            want = sum((d["to"] - d["from"]) * int(lengths[d["document"]]) for d in docs) / 65
            assert ascending.key(i) == pytest.approx(want)
    # by score (one per document beside the data), descending in 4 shuffled buckets; deterministic
    rng = np.random.default_rng(3)
    for name in ("web", "code"):
        scores = rng.random(len(plain.datasets[0].data.sequence_lengths if name == "web" else
                                plain.datasets[1].data.sequence_lengths))
        np.save(f"{c[name]}_train.scores.npy", scores)
    spec_score = {"by": "score", "order": "descending", "buckets": 4}
    a = build_gpt_dataset(spec, 64, 160, 1234, curriculum=spec_score)
    b = build_gpt_dataset(spec, 64, 160, 1234, curriculum=spec_score)
    at = [i for i in range(160) if plain.sample_sources[i] == 0]
    keys = [a.key(i) for i in at]
    assert keys == [b.key(i) for i in at] and all(
        (a[i]["tokens"] == b[i]["tokens"]).all() for i in at)
    quarter = len(keys) // 4
    means = [float(np.mean(keys[k * quarter:(k + 1) * quarter])) for k in range(4)]
    assert means == sorted(means, reverse=True) and keys != sorted(keys, reverse=True)  # buckets, shuffled inside
    docs = a.locate(at[0])["documents"]
    score = np.load(f"{c['web']}_train.scores.npy")
    assert a.key(at[0]) == pytest.approx(sum((d["to"] - d["from"]) * score[d["document"]] for d in docs) / 65)


def test_a_curriculum_stage_trains_and_resumes_exactly(staged_corpora, staged_reference, tmp_path):
    curriculum = "stages.stable.curriculum={by: length, order: descending, buckets: 2}"
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    pretrain_here(staged_sets(staged_corpora, whole, curriculum))
    pretrain_here(staged_sets(staged_corpora, parts, curriculum), stop_at_step=12)
    pretrain_here(staged_sets(staged_corpora, parts, curriculum), resume="auto")
    a, b, plain = train_records(whole), train_records(parts), train_records(staged_reference)
    assert {s: r["loss"] for s, r in a.items()} == {s: r["loss"] for s, r in b.items()}
    assert a[5]["loss"] != plain[5]["loss"]  # another order than the shuffle's
    (start,) = [e for e in events(whole, "stage") if e["stage"] == "stable"]
    assert "curriculum" in (whole / "logs" / "run.log").read_text()
    assert start["data_position"] == 0
