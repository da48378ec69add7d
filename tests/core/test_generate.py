"""Generation against transformers: greedy token-for-token equal to HF generate, logits processors as HF's,
KV-cache decoding equal to full recompute, stop tokens per row, seeded sampling."""

from __future__ import annotations

import pytest
import torch
from core_helpers import make_hf_model
from llmctl.core.errors import UserError
from llmctl.core.nn.generate import apply_repetition_penalty, generate, generate_text, warp_logits
from llmctl.core.nn.loading import load_model
from llmctl.core.nn.model import KVCache

transformers = pytest.importorskip("transformers")
from transformers.generation.logits_process import (  # noqa: E402
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

PROMPTS = [[5, 17, 33, 2, 91, 60, 7, 12], [44, 9], [100, 101, 3, 250, 18]]


@pytest.fixture(scope="module", params=["llama-gqa-untied-llama3rope", "qwen2-gqa-tied-bias"])
def pair(request, tmp_path_factory):
    hf = make_hf_model(request.param, seed=3)
    d = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(d)
    return hf, load_model(d, device="cpu")


def _hf_greedy(hf, prompts, n):
    L = max(map(len, prompts))
    ids = torch.tensor([[0] * (L - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    out = hf.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )
    return out[:, L:].tolist()


def test_greedy_equals_hf_single_and_left_padded_batch(pair):
    hf, loaded = pair
    for prompts in ([PROMPTS[0]], PROMPTS):
        ours = generate(loaded.model, prompts, max_new_tokens=12, pad_id=0)
        assert ours == _hf_greedy(hf, prompts, 12)


def test_batch_rows_equal_their_unbatched_selves(pair):
    _, loaded = pair
    batched = generate(loaded.model, PROMPTS, max_new_tokens=10)
    assert batched == [generate(loaded.model, [p], max_new_tokens=10)[0] for p in PROMPTS]


def test_kv_cache_decode_equals_full_recompute(pair):
    _, loaded = pair
    model, prompt = loaded.model, torch.tensor([PROMPTS[0]])
    new = generate(model, [PROMPTS[0]], max_new_tokens=6)[0]
    full = torch.cat([prompt, torch.tensor([new])], dim=1)
    with torch.no_grad():
        ref = model(full)
        cache = KVCache(model.cfg, 1, full.shape[1], torch.float32, "cpu")
        steps = [model(prompt, cache=cache)]
        for t in new:
            steps.append(model(torch.tensor([[t]]), cache=cache))
    cached = torch.cat(steps, dim=1)
    assert (cached - ref[:, : cached.shape[1]]).abs().max() <= 1e-5
    assert cache.length == full.shape[1]


def test_stop_tokens_end_each_row_separately(pair):
    _, loaded = pair
    free = generate(loaded.model, PROMPTS, max_new_tokens=10)
    stop = free[0][3]
    stopped = generate(loaded.model, PROMPTS, max_new_tokens=10, stop_ids=[stop])
    for row, out in zip(free, stopped):
        assert out == (row[: row.index(stop)] if stop in row else row)
    assert len(stopped[0]) == free[0].index(stop) < 10


def test_logits_processors_equal_hf():
    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 3
    ids = torch.randint(0, 50, (3, 7))
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter_(1, ids, True)
    for penalty in (1.3, 0.7):
        ours = apply_repetition_penalty(logits, seen, penalty)
        assert torch.equal(ours, RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone()))
    for temperature, top_k, top_p in (
        (0.7, 0, 1.0),
        (1.0, 5, 1.0),
        (1.0, 0, 0.8),
        (1.3, 10, 0.5),
        (1.0, 0, 0.01),
    ):
        ref = logits.clone()
        ref = TemperatureLogitsWarper(temperature)(ids, ref) if temperature != 1.0 else ref
        ref = TopKLogitsWarper(top_k)(ids, ref) if top_k else ref
        ref = TopPLogitsWarper(top_p)(ids, ref) if top_p < 1 else ref
        ours = warp_logits(logits, temperature, top_k, top_p)
        assert torch.equal(torch.isinf(ours), torch.isinf(ref))
        assert torch.allclose(ours[~torch.isinf(ours)], ref[~torch.isinf(ref)])


def test_repetition_penalty_greedy_equals_hf(pair):
    hf, loaded = pair
    prompt = PROMPTS[0]
    ours = generate(loaded.model, [prompt], max_new_tokens=12, repetition_penalty=1.8)[0]
    ref = hf.generate(
        input_ids=torch.tensor([prompt]),
        max_new_tokens=12,
        min_new_tokens=12,
        do_sample=False,
        repetition_penalty=1.8,
        pad_token_id=0,
        eos_token_id=None,
    )[0, len(prompt) :].tolist()
    assert ours == ref


def test_sampling_is_seeded_and_top_k_1_is_greedy(pair):
    _, loaded = pair
    kw = dict(max_new_tokens=12, temperature=1.0, top_p=0.95)
    a = generate(loaded.model, PROMPTS, seed=7, **kw)
    assert a == generate(loaded.model, PROMPTS, seed=7, **kw)
    assert a != generate(loaded.model, PROMPTS, seed=8, **kw)
    assert generate(loaded.model, PROMPTS, max_new_tokens=8, temperature=2.0, top_k=1, seed=1) == generate(
        loaded.model, PROMPTS, max_new_tokens=8
    )


def test_bad_arguments_are_user_errors(pair):
    _, loaded = pair
    for kw in (dict(temperature=-1), dict(top_p=0), dict(top_k=-2), dict(repetition_penalty=0)):
        with pytest.raises(UserError):
            generate(loaded.model, PROMPTS, max_new_tokens=2, **kw)
    with pytest.raises(UserError, match="prompt 1 is empty"):
        generate(loaded.model, [[1], []], max_new_tokens=2)
    with pytest.raises(UserError, match="outside the model's vocabulary"):
        generate(loaded.model, [[10**6]], max_new_tokens=2)
    assert generate(loaded.model, PROMPTS, max_new_tokens=0) == [[], [], []]


def test_generate_text_and_cli_from_native_checkpoint(tmp_path, tiny_tokenizer_dir, cli):
    from llmctl.core.nn.convert import hf_to_native
    from llmctl.core.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer_dir)
    hf = make_hf_model("llama-mha-tied", vocab_size=tok.vocab_size)
    hf.save_pretrained(tmp_path / "hf")
    tok.hf.save_pretrained(tmp_path / "hf")
    hf_to_native(tmp_path / "hf", tmp_path / "native")
    loaded = load_model(tmp_path / "native", device="cpu")
    prompts = ["the quick brown", "hello"]
    texts = generate_text(loaded, prompts, max_new_tokens=6, stop_ids=[])
    ids = [tok.encode(p) for p in prompts]
    assert texts == [tok.decode(r) for r in _hf_greedy(hf, ids, 6)]
    code, out, err = cli(
        "generate",
        "--ckpt-dir",
        tmp_path / "native",
        "--prompt",
        prompts[0],
        "--prompt",
        prompts[1],
        "--max-new-tokens",
        "6",
        "--json",
    )
    assert code == 0, err
    import json

    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in rows] == prompts
    # the CLI stops on eos, so its completion is a prefix of the unstopped text
    assert all(t.startswith(r["completion"]) for t, r in zip(texts, rows))
    code, out, err = cli(
        "generate",
        "--preset",
        "tiny",
        "--tokenizer",
        tiny_tokenizer_dir,
        "--prompt",
        "hi",
        "--max-new-tokens",
        "3",
        "--seed",
        "1",
        "--temperature",
        "0.8",
    )
    assert code == 0 and out.startswith("hi"), err
    code, out, err = cli("generate", "--preset", "tinyy", "--tokenizer", tiny_tokenizer_dir, "--prompt", "hi")
    assert code == 2 and "unknown model preset 'tinyy'" in err and "did you mean 'tiny'" in err
