"""`llmctl scaling plan`: proportional shapes, parameter counts equal to the built model's, D = C / (6 N), the
grid as editable YAML that `run` reads back, and bad grids refused in one line before anything is written."""

from __future__ import annotations

import dataclasses
import math

import pytest
import yaml

from llmctl.core.model_config import get_preset
from llmctl.scaling.grid import read_grid, resolve_points
from llmctl.scaling.plan import PlanOptions, plan
from llmctl.scaling.shapes import ASPECT_BAND, at_padded_vocab, params_non_embedding, params_total, \
    proportional_shapes

TOY = ["data.seq_length=32", "train.global_batch_size=8", "train.micro_batch_size=8", "model.vocab_size=500"]


def test_param_counts_equal_the_built_model():
    """Both counts against the real module: total = every parameter of the model built at the padded vocab,
    non-embedding = total minus the embedding and LM head matrices."""
    import torch

    from llmctl.core.nn.build import build_model

    for preset in ("tiny", "zen-500m", "qwen2.5-0.5b"):
        cfg = dataclasses.replace(get_preset(preset), num_layers=2, vocab_size=1000)
        padded = at_padded_vocab(cfg)
        with torch.device("meta"):
            model = build_model(padded, device="meta")
        numel = sum(p.numel() for p in model.parameters())
        assert params_total(cfg) == numel, preset
        vocab = model.embed.weight.numel() + (0 if cfg.tie_embeddings else model.lm_head.weight.numel())
        assert params_non_embedding(padded) == numel - vocab, preset


@pytest.mark.parametrize("preset", ["tiny", "zen-500m", "llama3-8b"])
def test_shapes_grow_in_proportion(preset):
    base = get_preset(preset)
    multiple = 64 if base.hidden_size < 512 else 128
    aspect = base.hidden_size / base.num_layers
    gqa = base.num_heads / base.kv_heads
    shapes = proportional_shapes(base, tp=2)
    assert len(shapes) > 20
    sizes = [params_non_embedding(s) for s in shapes]
    assert sizes == sorted(sizes)
    for s in shapes:
        s.validate()
        assert s.hidden_size % multiple == 0 and s.ffn_hidden_size % multiple == 0
        assert 1 / ASPECT_BAND <= (s.hidden_size / s.num_layers) / aspect <= ASPECT_BAND
        assert s.num_heads % 2 == 0 and s.kv_heads % 2 == 0 and s.ffn_hidden_size % 2 == 0  # TP 2 splits them
        if s.num_heads >= gqa * 2:  # room for the base's GQA ratio with KV heads split over TP 2
            assert abs(math.log((s.num_heads / s.kv_heads) / gqa)) <= math.log(2) + 1e-9
        if s.hidden_size >= 8 * base.head_dim:  # big enough for 8 heads of the base's head size
            assert s.num_heads % 8 == 0, s
        ideal_ffn = base.ffn_hidden_size / base.hidden_size * s.hidden_size
        assert abs(s.ffn_hidden_size - ideal_ffn) <= multiple / 2  # the base's FFN ratio, to the multiple


def test_plan_isoflop_grid():
    grid = plan("tiny", TOY, PlanOptions(budgets=[4e10, 1e10, 2e10], points=3, tokens_per_param=1))
    points = resolve_points(grid)
    assert len(points) == 9
    assert [p.budget for p in points] == [1e10] * 3 + [2e10] * 3 + [4e10] * 3
    for budget in (1e10, 2e10, 4e10):
        profile = [p for p in points if p.budget == budget]
        assert len({p.params for p in profile}) == 3  # three distinct sizes, smallest first
        assert [p.params for p in profile] == sorted(p.params for p in profile)
        for p in profile:
            # D = C / (6 N), rounded to whole iterations of GBS 8 x seq 32
            assert abs(p.tokens - budget / (6 * p.params)) <= 8 * 32 / 2
            assert p.tokens == p.iters * 8 * 32
            assert p.flops == pytest.approx(6 * p.params * p.tokens)
            assert p.params == p.params_non_embedding < p.params_total
            assert p.params_total == params_total(get_preset("tiny").__class__(
                **{**p.config["model"], "vocab_size": 500}))


def test_plan_total_params_full_flops_and_lr_sweep():
    grid = plan("tiny", TOY, PlanOptions(budgets=[1e10, 2e10], points=3, tokens_per_param=1, params="total",
                                         flops="full", lr_sweep=[0.5, 1, 2], batch_sweep=[1, 2]))
    points = resolve_points(grid)
    assert len(points) == 2 * 3 * 3 * 2
    assert {p.lr for p in points} == {1.5e-3, 3e-3, 6e-3} and {p.global_batch_size for p in points} == {8, 16}
    for p in points:
        assert p.params == p.params_total
        from llmctl.core.model_config import ModelConfig

        cfg = at_padded_vocab(ModelConfig(**p.config["model"]))
        assert p.flops == pytest.approx(cfg.flops_per_token(32) * p.tokens)  # the MFU numerator's FLOPs


def test_cli_plan_writes_editable_yaml_and_prints(cli, tmp_path):
    out = tmp_path / "grid.yaml"
    code, stdout, _ = cli("scaling", "plan", "-c", "tiny", *[a for s in TOY for a in ("--set", s)],
                          "--budgets", "1e10,2e10,4e10", "--points", "3", "--tokens-per-param", "1",
                          "--out", out, "--print")
    assert code == 0, stdout
    header = stdout.splitlines()[0].split()
    assert header[:9] == ["name", "budget", "N", "N", "total", "layers", "hidden", "heads", "kv"]
    assert "D" in header and "iters" in header
    assert len([ln for ln in stdout.splitlines() if ln.startswith("C")]) == 9
    grid = yaml.safe_load(out.read_text())
    assert grid["base"] == "tiny" and grid["params"] == "non-embedding" and grid["flops"] == "6nd"
    # a person edits it: a point's LR, and a point removed
    grid["points"][0]["train"]["lr"] = 1e-3
    del grid["points"][-1]
    out.write_text(yaml.safe_dump(grid))
    points = resolve_points(read_grid(out))
    assert len(points) == 8 and points[0].lr == 1e-3


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["model"].update(num_heads=5), "not divisible by num_heads 5"),
    (lambda p: p["model"].update(hidden_size=0), "point 'C1e10"),
    (lambda p: p["train"].update(global_batch_size=7), "not divisible by train.micro_batch_size"),
    (lambda p: p["model"].update(hidden_sise=64), "did you mean 'hidden_size'"),
    (lambda p: p.update(budget=-1), "budget must be a positive"),
    (lambda p: p.update(colour="red"), "unknown key 'colour'"),
])
def test_bad_grid_point_is_one_line_and_nothing_written(cli, tmp_path, edit, message):
    grid = plan("tiny", TOY, PlanOptions(budgets=[1e10, 2e10], points=3, tokens_per_param=1))
    edit(grid["points"][0])
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    code, _, stderr = cli("scaling", "run", path, "--out-dir", tmp_path / "sweep")
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: ") and message in stderr, stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("args, message", [
    (["--budgets", "1e10,-2"], "--budgets must be positive"),
    (["--budgets", "1e10", "--points", "2"], "--points must be >= 3"),
    (["--budgets", "1e3"], "too small"),
    (["--budgets", "1e10", "--lr-sweep", "1,x"], "--lr-sweep: expected comma-separated numbers"),
])
def test_bad_plan_options(cli, tmp_path, args, message):
    out = tmp_path / "grid.yaml"
    code, _, stderr = cli("scaling", "plan", "-c", "tiny", *[a for s in TOY for a in ("--set", s)], *args,
                          "--out", out)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists()


def test_a_run_dir_not_made_by_the_sweep_is_left_alone(tmp_path):
    """A folder in the way of a point (not made by `scaling run`) is a failed row naming it, never deleted."""
    from llmctl.scaling.sweep import run_grid

    grid = plan("tiny", TOY, PlanOptions(budgets=[1e10, 2e10], points=3, tokens_per_param=1))
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    first = grid["points"][0]["name"]
    keep = tmp_path / "s" / first / "notes.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("mine")
    grid["points"] = grid["points"][:1]
    path.write_text(yaml.safe_dump(grid))
    rows = run_grid(path, tmp_path / "s", echo=lambda line: None)
    assert rows[0]["status"] == "failed" and "was not made by `llmctl scaling run`" in rows[0]["error"]
    assert keep.read_text() == "mine"
