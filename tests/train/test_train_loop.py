"""The training loop in-process on a tiny model: accumulation, exact resume, channel/validation loss against
torch's own cross-entropy, guards (injected NaN, rollback), checkpoint contents, mixed precision."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from llmctl.core.nn.checkpoint import latest_iteration, load_checkpoint
from llmctl.core.errors import UserError
from llmctl.core.train import load_train_config, pretrain
from llmctl.core.nn.build import build_model
from llmctl.core.train.optim import build_optimizer

from train_helpers import PatternDataset, read_jsonl


class NanLossAt:
    """Fault injection from outside the driver: the loss is NaN at these steps, once per step number (a
    rollback that replays a step number trains it normally)."""

    def __init__(self, *steps: int):
        self.pending, self.active = set(steps), False

    def on_step_start(self, trainer, step):
        self.active = step in self.pending
        self.pending.discard(step)

    def on_micro_batch_loss(self, trainer, step, loss_sum):
        return loss_sum * float("nan") if self.active else loss_sum


def _train_records(path):
    return [r for r in read_jsonl(path) if "lr" in r and "event" not in r]


def _model_state(ckpt_dir):
    state, _, _ = load_checkpoint(ckpt_dir)
    return state["model"]


def test_grad_accumulation_equals_one_big_batch(tiny_cfg):
    one = pretrain(tiny_cfg("train.micro_batch_size=8", "train.train_iters=3", name="big"))
    four = pretrain(tiny_cfg("train.micro_batch_size=2", "train.train_iters=3", name="accum"))
    a, b = _train_records(one.log_path), _train_records(four.log_path)
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-5)
    assert [r["grad_norm"] for r in a] == pytest.approx([r["grad_norm"] for r in b], rel=1e-4)
    wa, wb = _model_state(one.checkpoint_dir), _model_state(four.checkpoint_dir)
    assert wa.keys() == wb.keys()
    for name in wa:
        # Adam turns fp32 summation-order noise in a near-zero gradient into up to ~lr/1000 of weight
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    assert not torch.equal(wa["layers.0.mlp.up_proj.weight"], _init_weights(tiny_cfg())["layers.0.mlp.up_proj.weight"])


def _init_weights(cfg):
    from llmctl.core.train.state import seed_everything

    seed_everything(cfg.train.seed)
    return build_model(cfg.model).state_dict()


def test_exact_resume_in_process(tiny_cfg):
    full = pretrain(tiny_cfg(name="full"))
    cfg = tiny_cfg(name="split")
    first = pretrain(cfg, stop_at_step=3)
    assert first.stopped_early and first.final_step == 3 and latest_iteration(first.checkpoint_dir) == 3
    second = pretrain(cfg, resume="auto")
    assert second.final_step == 6
    want = [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in _train_records(full.log_path)]
    got = {r["step"]: (r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in _train_records(second.log_path)}
    assert [got[s] for s in sorted(got)] == want  # bit-exact, step for step
    assert second.val_loss == full.val_loss
    for name, w in _model_state(full.checkpoint_dir).items():
        assert torch.equal(w, _model_state(second.checkpoint_dir)[name]), name
    events = [r for r in read_jsonl(second.log_path) if r.get("event") == "resume"]
    assert len(events) == 1 and events[0]["step"] == 3 and events[0]["consumed_samples"] == 24


def test_channel_and_validation_loss_match_torch_cross_entropy(tiny_cfg, pattern_data):
    """With lr=0 the model stays at its init, so the logged per-source losses must equal F.cross_entropy over
    the same samples computed here from the checkpointed weights."""
    cfg = tiny_cfg("train.lr=0", "train.min_lr=0", "train.train_iters=1", "eval.iters=2", name="channels")
    result = pretrain(cfg)
    rec = _train_records(result.log_path)[0]
    val = [r for r in read_jsonl(result.log_path) if "val_loss" in r][-1]

    model = build_model(cfg.model)
    model.load_state_dict(_model_state(result.checkpoint_dir))
    model.eval()

    def losses(ds, n):
        per_source = {Path(name).name: [] for name in ds.source_names}
        for i in range(n):
            s = ds[i]
            tokens = torch.from_numpy(s["tokens"])[None]
            with torch.no_grad():
                logits = model(tokens[:, :-1])
            ce = F.cross_entropy(logits[0].double(), tokens[0, 1:], reduction="none")
            per_source[Path(ds.source_names[s["source"]]).name].append(ce)
        allv = torch.cat([torch.cat(v) for v in per_source.values()])
        return allv.mean().item(), {k: torch.cat(v).mean().item() for k, v in per_source.items()}

    train_ds = PatternDataset(pattern_data, 32, 8, 0, "train")
    total, by_source = losses(train_ds, cfg.global_batch_size)
    assert rec["loss"] == pytest.approx(total, rel=1e-5)
    assert rec["loss/en"] == pytest.approx(by_source["en"], rel=1e-5)
    assert rec["loss/zh"] == pytest.approx(by_source["zh"], rel=1e-5)
    assert abs(by_source["en"] - by_source["zh"]) > 1e-3  # the channels really differ
    val_total, val_by_source = losses(PatternDataset(pattern_data, 32, 16, 0, "val"), 2 * cfg.global_batch_size)
    assert val["val_loss"] == pytest.approx(val_total, rel=1e-5)
    assert val["val_loss/zh"] == pytest.approx(val_by_source["zh"], rel=1e-5)
    assert val["val_ppl"] == pytest.approx(math.exp(val_total), rel=1e-5)


def test_injected_nan_is_skipped_logged_and_training_continues(tiny_cfg, capsys):
    result = pretrain(tiny_cfg(name="nan"), callbacks=[NanLossAt(3)])
    records = read_jsonl(result.log_path)
    skips = [r for r in records if r.get("event") == "skip"]
    assert [s["step"] for s in skips] == [3] and "non-finite loss" in skips[0]["reason"]
    train = {r["step"]: r for r in _train_records(result.log_path)}
    assert train[3]["skipped"] == 1 and train[3]["nan_iterations"] == 1 and train[3]["loss"] is None
    assert train[3]["lr"] == train[4]["lr"]  # the skipped step did not advance the schedule
    assert all(math.isfinite(train[s]["loss"]) for s in (1, 2, 4, 5, 6)) and result.final_step == 6
    assert all(torch.isfinite(w).all() for w in _model_state(result.checkpoint_dir).values())
    out = capsys.readouterr().out
    assert "number of skipped iterations:   1 | number of nan iterations:   1 |" in out
    assert "event skip at iteration 3" in out
    state, _, _ = load_checkpoint(result.checkpoint_dir)
    assert state["train_state"]["skipped_iters"] == 1


def test_consecutive_bad_steps_roll_back_and_skip_data(tiny_cfg):
    cfg = tiny_cfg("guards.max_consecutive=3", "checkpoint.interval=2", "train.train_iters=8", name="rollback")
    result = pretrain(cfg, callbacks=[NanLossAt(4, 5, 6)])
    records = read_jsonl(result.log_path)
    events = [(r["event"], r["step"]) for r in records if r.get("event")]
    assert events == [("skip", 4), ("skip", 5), ("skip", 6), ("rollback", 6)]
    rollback = records[[r.get("event") for r in records].index("rollback")]
    assert rollback["to_iteration"] == 4 and rollback["skipped_samples"] == 16  # steps 5 and 6's batches
    after = [r for r in records[records.index(rollback) + 1:] if "lr" in r]
    assert [r["step"] for r in after] == [5, 6, 7, 8]
    assert after[0]["consumed_samples"] == 56  # step 5 again, but reading the data after the bad batches
    assert all(math.isfinite(r["loss"]) for r in after) and result.final_step == 8
    state, _, _ = load_checkpoint(result.checkpoint_dir)
    ts = state["train_state"]
    assert ts["rollbacks"] == 1 and ts["skipped_samples"] == 16 and ts["consumed_samples"] == 80


def test_rollback_needs_a_checkpoint(tiny_cfg):
    with pytest.raises(UserError, match="no checkpoint to roll back to"):
        pretrain(tiny_cfg("guards.max_consecutive=2", name="norollback"), callbacks=[NanLossAt(1, 2)])


def test_checkpoint_is_self_describing(tiny_cfg):
    from llmctl.core.nn.loading import load_model
    from llmctl.core.model_config import ModelConfig
    from llmctl.core.config import to_dict

    cfg = tiny_cfg("train.train_iters=2", name="describe")
    result = pretrain(cfg)
    state, config, it_dir = load_checkpoint(result.checkpoint_dir)  # weights_only=True inside
    assert state["iteration"] == 2 and set(state) >= {"model", "optimizer", "opt_param_scheduler", "rng_state",
                                                      "train_state"}
    assert config["model"] == to_dict(cfg.model) and set(config["model"]) == set(to_dict(ModelConfig()))
    assert yaml.safe_load((it_dir / "config.yaml").read_text())["train"]["global_batch_size"] == 8
    again = load_train_config(it_dir / "config.yaml")  # the stored config is a valid config as-is
    assert again.model == cfg.model and again.data.path == cfg.data.path
    loaded = load_model(result.checkpoint_dir, device="cpu")
    tokens = torch.arange(3, 19)[None]
    model = build_model(cfg.model)
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens), model(tokens))


def test_no_weight_decay_on_norms_and_biases(tiny_cfg):
    cfg = tiny_cfg("model.qkv_bias=true")
    model = build_model(cfg.model)
    opt = build_optimizer(list(model.parameters()), cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert "layers.0.attn.q_proj.bias" in plain and "norm.weight" in plain and "layers.1.input_norm.weight" in plain
    assert "embed.weight" in decayed and "layers.0.mlp.down_proj.weight" in decayed
    assert not any(n.endswith("bias") or "norm" in n for n in decayed)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_runs(tiny_cfg, dtype):
    result = pretrain(tiny_cfg(f"train.dtype={dtype}", "train.train_iters=3", name=dtype))
    recs = _train_records(result.log_path)
    assert all(math.isfinite(r["loss"]) for r in recs)
    assert recs[-1]["loss_scale"] == (65536.0 if dtype == "fp16" else 1.0)
    assert all(w.dtype == torch.float32 for w in _model_state(result.checkpoint_dir).values())


def test_exit_interval_saves_and_stops(tiny_cfg):
    result = pretrain(tiny_cfg("train.exit_interval=4", "eval.iters=0", name="exit"))
    assert result.stopped_early and result.final_step == 4 and result.val_loss is None
    assert latest_iteration(result.checkpoint_dir) == 4


def test_tensorboard_sink(tiny_cfg):
    """Without tensorboard installed: a one-line error naming the package; with it: the scalars read back."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="needs the tensorboard package"):
            pretrain(tiny_cfg("logging.sinks=[jsonl, tensorboard]", name="tb"))
    else:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        result = pretrain(tiny_cfg("logging.sinks=[jsonl, tensorboard]", "train.train_iters=2", name="tb"))
        events = EventAccumulator(str(result.log_path.parent / "tensorboard" / "run"))
        events.Reload()
        scalars = events.Scalars("loss")
        records = _train_records(result.log_path)
        assert [e.step for e in scalars] == [r["step"] for r in records]
        assert [e.value for e in scalars] == pytest.approx([r["loss"] for r in records])  # stored as fp32


def test_activation_checkpointing_and_data_workers_change_nothing(tiny_cfg):
    """Recomputing activations in backward, or reading batches in worker processes, gives the same run."""
    base = pretrain(tiny_cfg("train.train_iters=3", "eval.iters=0", name="base"))
    ckpt = pretrain(tiny_cfg("train.train_iters=3", "eval.iters=0", "train.activation_checkpointing=true",
                             name="recompute"))
    workers = pretrain(tiny_cfg("train.train_iters=3", "eval.iters=0", "data.num_workers=2", name="workers"))
    want = [r["loss"] for r in _train_records(base.log_path)]
    assert [r["loss"] for r in _train_records(ckpt.log_path)] == pytest.approx(want, rel=1e-6)
    assert [r["loss"] for r in _train_records(workers.log_path)] == want


def test_resume_from_a_named_checkpoint_and_mismatches(tiny_cfg, tmp_path):
    first = pretrain(tiny_cfg("checkpoint.interval=2", "train.train_iters=4", "eval.iters=0", name="a"))
    iter2 = first.checkpoint_dir / "iter_0000002"
    # continue from iteration 2 of run "a" into a new directory "b": same steps 3-4 as run "a"
    second = pretrain(tiny_cfg("train.train_iters=4", "eval.iters=0", name="b"), resume=str(iter2))
    want = {r["step"]: r["loss"] for r in _train_records(first.log_path)}
    got = {r["step"]: r["loss"] for r in _train_records(second.log_path)}
    assert sorted(got) == [3, 4] and got[3] == want[3] and got[4] == want[4]
    with pytest.raises(UserError, match="checkpoint has model.hidden_size=64 but the config has 128"):
        pretrain(tiny_cfg("model.hidden_size=128", name="c"), resume=str(iter2))
    with pytest.raises(UserError, match="checkpoint directory not found"):
        pretrain(tiny_cfg(name="d"), resume=str(tmp_path / "nothing"))
