"""`--device npu` (or cuda) on a machine without one is one line naming what is missing, exit 2 — not torch's
"Expected one of cpu, cuda, ... device type" traceback — for training, generation and chat alike."""

from __future__ import annotations

import pytest
import torch
from labs_helpers import token_corpus

from llmctl.core.nn.device import npu_available


@pytest.mark.skipif(npu_available(), reason="this machine has an NPU")
def test_npu_requested_without_one(tmp_path, cli, real_fixtures):
    tok = real_fixtures / "tokenizers" / "minimind"
    data = token_corpus(tmp_path / "data" / "corpus", docs=20)
    runs = [
        ("generate", "--preset", "tiny", "--tokenizer", tok, "--prompt", "hi", "--device", "npu"),
        ("pretrain", "-c", "tiny", "--set", f"data.path={data}", "--set", "model.vocab_size=256",
         "--set", "train.device=npu", "--set", f"checkpoint.dir={tmp_path / 'ckpt'}",
         "--set", f"logging.dir={tmp_path / 'logs'}"),
    ]
    for args in runs:
        code, out, err = cli(*args)
        assert code == 2 and err.startswith("error: device npu: no NPU visible") and err.count("\n") == 1, err
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_requested_without_one(cli, real_fixtures):
    code, _, err = cli("generate", "--preset", "tiny", "--tokenizer", real_fixtures / "tokenizers" / "minimind",
                       "--prompt", "hi", "--device", "cuda")
    assert code == 2 and "device cuda: no CUDA device visible" in err and err.count("\n") == 1
