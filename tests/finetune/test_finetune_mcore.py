"""`llmctl chat --prompt` and `llmctl finetune` take a Megatron-core (MindSpeed) checkpoint directory as the
model: the same answer and the same training losses as from the HF dir it was converted from."""

from __future__ import annotations

import pytest
from finetune_helpers import QA, read_jsonl, sft_data


@pytest.fixture(scope="module")
def mcore_base(tmp_path_factory, hf_base):
    from llmctl.core.nn.mcore_convert import hf_to_mcore

    out = tmp_path_factory.mktemp("mcore_base") / "mc"
    hf_to_mcore(hf_base, out, tp=2)  # TP2 shards, the tokenizer shipped in iter_0000001/tokenizer
    return out


def test_chat_prompt_from_mcore_dir(mcore_base, hf_base, cli):
    args = ("--prompt", QA[0][0], "--prompt-type", "chatml", "--max-new-tokens", "8")
    code, from_mcore, err = cli("chat", "--ckpt-dir", mcore_base, *args)
    assert code == 0, err
    assert "read a megatron-core checkpoint" in err
    code, from_hf, err = cli("chat", "--ckpt-dir", hf_base, *args)
    assert code == 0, err
    assert from_mcore == from_hf and from_mcore.strip()


def test_finetune_from_mcore_dir(tmp_path, tok_dir, mcore_base, hf_base, cli):
    data = sft_data(tmp_path, tok_dir)
    config = tmp_path / "sft.yaml"
    config.write_text("task: {method: full, prompt_type: chatml}\n")
    losses, logs = {}, {}
    for name, base in (("mcore", mcore_base), ("hf", hf_base)):
        sets = [f"task.base={base}", f"data.path={data}", "data.seq_length=64", "train.train_iters=3",
                "train.global_batch_size=2", "train.micro_batch_size=2", "train.lr=1e-3", "train.warmup_iters=0",
                "eval.iters=0", f"checkpoint.dir={tmp_path / name / 'ckpt'}", f"logging.dir={tmp_path / name}",
                "logging.name=run", "logging.interval=1"]
        code, out, err = cli("finetune", "-c", config, *[a for s in sets for a in ("--set", s)])
        assert code == 0, err
        losses[name] = {r["step"]: r["loss"] for r in read_jsonl(tmp_path / name / "run.jsonl") if "lr" in r}
        logs[name] = (tmp_path / name / "run.log").read_text()
    assert len(losses["mcore"]) == 3 and losses["mcore"] == losses["hf"]
    assert "megatron-core weights" in logs["mcore"] and "Hugging Face weights" in logs["hf"]
