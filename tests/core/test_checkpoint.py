"""Checkpoints: a crash mid-save never leaves a checkpoint that looks complete, a pickle payload is refused
without running, keep-last-K prunes, and a native checkpoint loads back into an identical model."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from llmctl.core.nn import checkpoint
from llmctl.core.nn.checkpoint import (
    POINTER,
    latest_iteration,
    list_iterations,
    load_checkpoint,
    save_checkpoint,
)
from llmctl.core.config import to_dict
from llmctl.core.errors import UserError
from llmctl.core.nn.loading import load_model
from llmctl.core.model_config import get_preset
from llmctl.core.nn.model import Transformer


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((4, 4), value)}, "iteration": int(value)}


def _assert_no_complete_looking_dir(ckpt, iteration):
    it_dir = ckpt / checkpoint.iter_dir_name(iteration)
    assert not it_dir.exists() or not (it_dir / "mp_rank_00" / checkpoint.STATE_FILE).is_file()


def test_crash_inside_torch_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, _state(1), {"model": {}})
    real_save = torch.save

    def half_then_crash(obj, f, *a, **kw):
        real_save({"partial": torch.zeros(1)}, f)  # something is on disk under the temp name...
        raise OSError("disk full")  # ...and then the writer dies

    monkeypatch.setattr(checkpoint.torch, "save", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, _state(2), {"model": {}})
    assert latest_iteration(tmp_path) == 1
    _assert_no_complete_looking_dir(tmp_path, 2)
    assert list_iterations(tmp_path) == [1]
    state, _, it_dir = load_checkpoint(tmp_path)
    assert state["iteration"] == 1 and it_dir.name == "iter_0000001"


def test_crash_while_copying_tokenizer_keeps_previous_checkpoint(tmp_path, monkeypatch):
    tok = tmp_path / "tok"
    tok.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tok / name).write_text("{}")
    ck = tmp_path / "ck"
    save_checkpoint(ck, 10, _state(10), {"model": {}}, tokenizer_dir=tok)
    real_copy, calls = shutil.copy2, []

    def copy_half(src, dst, *a, **kw):
        calls.append(src)
        if len(calls) > 1:  # the model state and the first file are written, then the process dies
            raise KeyboardInterrupt
        return real_copy(src, dst, *a, **kw)

    monkeypatch.setattr(checkpoint.shutil, "copy2", copy_half)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ck, 20, _state(20), {"model": {}}, tokenizer_dir=tok)
    assert latest_iteration(ck) == 10 and list_iterations(ck) == [10]
    _assert_no_complete_looking_dir(ck, 20)
    assert not [p for p in ck.iterdir() if p.name.startswith(".")]  # temp dir cleaned up


class Payload:
    """Unpickling this runs open(marker, "w"): the side effect a malicious checkpoint would hide."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    ck = tmp_path / "ck"
    save_checkpoint(ck, 1, {"model": {"w": torch.zeros(2)}, "extra": Payload(marker)}, {"model": {}})
    state_file = ck / "iter_0000001" / "mp_rank_00" / checkpoint.STATE_FILE
    with pytest.raises(UserError, match="refused to load"):
        load_checkpoint(ck)
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it (so the check above can fail)
    canary = tmp_path / "canary"
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(Payload(canary)))
    pickle.loads((tmp_path / "p.pkl").read_bytes())
    assert canary.exists() and state_file.is_file()


def test_keep_last_k_prunes_older_iterations(tmp_path):
    for it in (100, 200, 300, 400, 500):
        save_checkpoint(tmp_path, it, _state(it), {"model": {}}, keep=2)
    assert list_iterations(tmp_path) == [400, 500]
    assert latest_iteration(tmp_path) == 500
    assert (tmp_path / POINTER).read_text().strip() == "500"


def test_native_checkpoint_round_trips_a_model(tmp_path, tiny_tokenizer_dir):
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    save_checkpoint(
        tmp_path,
        7,
        {"model": model.state_dict()},
        {"model": to_dict(cfg), "train": {"lr": 1e-3}},
        tokenizer_dir=tiny_tokenizer_dir,
    )
    for path in (tmp_path, tmp_path / "iter_0000007"):
        loaded = load_model(path, device="cpu")
        assert loaded.source == "native" and loaded.config == cfg and loaded.tokenizer is not None
        x = torch.randint(0, cfg.vocab_size, (2, 9))
        with torch.no_grad():
            assert torch.equal(loaded.model(x), model(x))
    with pytest.raises(UserError, match="iteration 8 not found"):
        load_model(tmp_path, iteration=8)


def test_config_typo_in_checkpoint_is_one_line_error(tmp_path, cli):
    cfg = to_dict(get_preset("tiny"))
    cfg["hiden_size"] = cfg.pop("hidden_size")
    save_checkpoint(tmp_path, 1, {"model": {}}, {"model": cfg})
    code, out, err = cli("generate", "--ckpt-dir", tmp_path, "--prompt", "x")
    assert code == 2 and err.count("\n") == 1
    assert "unknown config key 'model.hiden_size'" in err and "did you mean 'hidden_size'" in err
    cfg["hidden_size"] = "wide"
    del cfg["hiden_size"]
    save_checkpoint(tmp_path, 2, {"model": {}}, {"model": cfg})
    code, out, err = cli("generate", "--ckpt-dir", tmp_path, "--prompt", "x")
    assert code == 2 and "config key 'model.hidden_size': cannot read 'wide' as int" in err
