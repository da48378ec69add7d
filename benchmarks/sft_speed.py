"""SFT / LoRA / DPO training throughput on CPU: llmctl's finetune tasks (on its training driver) vs TRL's
`SFTTrainer` and Hugging Face `Trainer` (+ PEFT for LoRA) and TRL's `DPOTrainer`, measured in one run on the
same model (the HF export of one random llama), data (the same instruction samples, unpacked), batch,
sequence length, thread count, fp32 and AdamW. Prints trained-sequence tokens/s and the ratios.

    python benchmarks/sft_speed.py                 # 5M-param llama (6 x 256), seq 256, batch 8 (a few minutes)
    python benchmarks/sft_speed.py --threads 1 --steps 30

Each side batches as it does by default: llmctl lays a micro-batch's samples end to end (padding-free,
attention per sample, the LM head on trained positions only); the peers pad each batch to its longest sample
(TRL's `padding_free` needs FlashAttention 2/3, which CPUs lack). Tokens/s counts the real (unpadded) tokens
of the samples trained on (DPO: chosen + rejected of each pair). Every side runs fp32: TRL's configs default
to bf16=True, so the benchmark sets bf16=False. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

WORDS = ("the model learns to answer short questions about colours animals planets numbers food weather music "
         "rivers mountains cities books trains boats rain snow light sound water fire stone wood glass").split()


def make_corpus(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    say = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [(say(rng.randint(8, 40)) + "?", say(rng.randint(20, 120)) + ".") for _ in range(n)]


def read_alpaca(path: Path) -> list[tuple[str, str]]:
    """(prompt, response) of every record with a response in an alpaca-format JSON file (instruction, input,
    output): real instruction data, whose long-tailed lengths are what padding costs on in practice."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    return [((r["instruction"] + ("\n" + r["input"] if r.get("input") else "")), r["output"])
            for r in rows if r.get("output", "").strip()]


def fitting(corpus, tok: Path, seq: int, n: int) -> list[tuple[str, str]]:
    """The first `n` pairs whose templated text fits `seq` tokens (with room for the chat template), so no
    side drops or truncates a sample the other trains on whole."""
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(tok / "tokenizer.json"))
    kept = [(q, a) for q, a in corpus if len(t.encode(q).ids) + len(t.encode(a).ids) + 16 <= seq]
    if len(kept) < n:
        raise SystemExit(f"{len(kept)} records fit --seq {seq}; the run needs {n}")
    return kept[:n]


def make_tokenizer(out: Path, corpus) -> Path:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([q + " " + a for q, a in corpus] + ["system user assistant"], vocab_size=1024,
                            special_tokens=specials)
    PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                            additional_special_tokens=specials[1:]).save_pretrained(out)
    return out


def make_base(out: Path, tok: Path) -> Path:
    from llmctl.core.model_config import ModelConfig
    from llmctl.core.nn.build import build_model
    from llmctl.core.nn.convert import write_hf_dir
    from llmctl.core.tokenizer import load_tokenizer

    cfg = ModelConfig(vocab_size=load_tokenizer(tok).vocab_size, hidden_size=256, num_layers=6, num_heads=8,
                      num_kv_heads=4, ffn_hidden_size=704, max_seq_len=512, family="llama", norm_eps=1e-6)
    torch.manual_seed(0)
    return write_hf_dir(cfg, build_model(cfg).state_dict(), out, tok, source="bench")


def preprocess(tmp: Path, tok: Path, rows: list[dict], handler: str, seq: int) -> Path:
    from click.testing import CliRunner

    from llmctl.cli.main import build_cli

    inp = tmp / f"{handler}.json"
    inp.write_text(json.dumps(rows))
    prefix = tmp / handler / "data"
    res = CliRunner().invoke(build_cli(), ["data", "sft", "--input", str(inp), "--tokenizer-name-or-path", str(tok),
                                           "--output-prefix", str(prefix), "--handler-name", handler,
                                           "--prompt-type", "chatml", "--seq-length", str(seq)])
    assert res.exit_code == 0, res.output
    return prefix


# ---- llmctl ----------------------------------------------------------------------------------------------
class _Timer:
    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1 = warmup, None, None

    def on_step_start(self, trainer, step):
        if step == self.warmup + 1:
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer):
        self.t1 = time.perf_counter()


def run_llmctl(tmp, base, data, method, args, extra=()) -> float:
    """Seconds per optimizer step over the timed steps."""
    from llmctl.core.train.loop import pretrain
    from llmctl.finetune.commands import load_finetune_config

    cfg = load_finetune_config({}, [
        f"task.method={method}", f"task.base={base}", f"data.path={data}", f"data.seq_length={args.seq}",
        f"train.train_iters={args.warmup + args.steps}", f"train.global_batch_size={args.batch}",
        f"train.micro_batch_size={args.batch}", "train.lr=1e-4", "train.warmup_iters=0", "train.weight_decay=0.0",
        "eval.iters=0", f"logging.dir={tmp / ('logs_' + method)}", "logging.interval=1000", "guards.enabled=false",
        "task.pad_to_multiple_of=1", *extra])
    timer = _Timer(args.warmup)
    pretrain(cfg, callbacks=[timer])
    return (timer.t1 - timer.t0) / args.steps


# ---- Hugging Face / TRL ----------------------------------------------------------------------------------
class _HFTimer:
    def __new__(cls, warmup):
        from transformers import TrainerCallback

        class T(TrainerCallback):
            t0 = t1 = None

            def on_step_begin(self, a, state, control, **kw):
                if state.global_step == warmup:
                    self.t0 = time.perf_counter()

            def on_train_end(self, a, state, control, **kw):
                self.t1 = time.perf_counter()

        return T()


def _hf_args(tmp, args, cls=None, **kw):
    from transformers import TrainingArguments

    cls = cls or TrainingArguments
    return cls(output_dir=str(tmp), per_device_train_batch_size=args.batch, max_steps=args.warmup + args.steps,
               learning_rate=1e-4, weight_decay=0.0, lr_scheduler_type="cosine", logging_steps=1000,
               save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
               max_grad_norm=1.0, adam_beta2=0.95, **kw)


def run_hf_sft(tmp, base, samples, args, lora: bool) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Trainer

    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj"]))

    def collate(rows):  # dynamic padding, labels -100 on prompt and padding (what SFTTrainer's collator does)
        n = max(len(r["input_ids"]) for r in rows)
        ids = torch.zeros(len(rows), n, dtype=torch.long)
        lab = torch.full((len(rows), n), -100, dtype=torch.long)
        att = torch.zeros(len(rows), n, dtype=torch.long)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[i, :k], lab[i, :k], att[i, :k] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        return {"input_ids": ids, "labels": lab, "attention_mask": att}

    ds = Dataset.from_list(samples)
    timer = _HFTimer(args.warmup)
    Trainer(model=model, args=_hf_args(tmp, args, remove_unused_columns=False), train_dataset=ds,
            data_collator=collate, callbacks=[timer]).train()
    return (timer.t1 - timer.t0) / args.steps


def run_trl_sft(tmp, base, samples, args, lora: bool) -> float:
    """TRL's SFTTrainer on the same pre-tokenized samples (input_ids + labels, so no re-templating). Padded
    batches: TRL's `padding_free` needs FlashAttention 2/3, which a CPU does not have."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"])
    timer = _HFTimer(args.warmup)
    cfg = _hf_args(tmp, args, SFTConfig, max_length=args.seq, bf16=False, packing=False,
                   dataset_kwargs={"skip_prepare_dataset": True})
    SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(samples), peft_config=peft_config,
               callbacks=[timer]).train()
    return (timer.t1 - timer.t0) / args.steps


def run_trl_dpo(tmp, base, tok, pairs, args) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    ds = Dataset.from_list([{"prompt": f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n",
                             "chosen": c + "<|im_end|>", "rejected": r + "<|im_end|>"} for p, c, r in pairs])
    timer = _HFTimer(args.warmup)
    # DPOConfig defaults to bf16=True (autocast, bf16 matmuls on CPU too): pin fp32 like every other row
    cfg = _hf_args(tmp, args, DPOConfig, beta=0.1, max_length=args.seq, bf16=False)
    DPOTrainer(model=model, ref_model=ref, args=cfg, train_dataset=ds, processing_class=AutoTokenizer.from_pretrained(tok),
               callbacks=[timer]).train()
    return (timer.t1 - timer.t0) / args.steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for both (default: all cores)")
    p.add_argument("--only", default="full,lora,dpo", help="comma-separated subset of full, lora, dpo")
    p.add_argument("--data", type=Path, default=None, metavar="JSON",
                   help="alpaca-format instruction data (e.g. ../shared/fixtures/alpaca/alpaca_data.json) "
                        "instead of the synthetic uniform-length samples")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from llmctl.data.sft.datasets import PairwiseDataset, SFTDataset  # the same samples for both sides

    tmp = Path(tempfile.mkdtemp(prefix="sft_speed_"))
    n = args.batch * (args.warmup + args.steps)
    corpus = read_alpaca(args.data)[:4 * n] if args.data else make_corpus(n)
    tok = make_tokenizer(tmp / "tok", corpus)
    corpus = fitting(corpus, tok, args.seq, n)
    base = make_base(tmp / "base", tok)
    prefix = preprocess(tmp, tok, [{"instruction": q, "input": "", "output": a} for q, a in corpus],
                        "AlpacaStyleInstructionHandler", args.seq)
    ds = SFTDataset(prefix)
    samples = [{"input_ids": ds[i]["input_ids"].tolist(), "labels": ds[i]["labels"].tolist()} for i in range(len(ds))]
    tokens_per_step = sum(len(s["input_ids"]) for s in samples) / len(samples) * args.batch
    lengths = [len(s["input_ids"]) for s in samples]
    padded = sum(max(lengths[i:i + args.batch]) * len(lengths[i:i + args.batch]) for i in range(0, len(lengths), args.batch))
    vocab = len(json.loads((tok / "tokenizer.json").read_text())["model"]["vocab"])
    print(f"data: {args.data or 'synthetic (uniform lengths)'}; model: llama 6 layers x 256 hidden, vocab {vocab}; "
          f"{len(samples)} samples, mean {tokens_per_step / args.batch:.0f} tokens (padded to the longest of "
          f"{args.batch}: {padded / sum(lengths):.2f}x), batch {args.batch}, seq {args.seq}, threads "
          f"{torch.get_num_threads()}, {args.steps} timed steps after {args.warmup}")
    rows = []
    only = set(args.only.split(","))
    for method, lora in (("full", False), ("lora", True)):
        if method not in only:
            continue
        extra = ["task.lora.r=8", "task.lora.alpha=16"] if lora else []
        ours = tokens_per_step / run_llmctl(tmp, base, prefix, method, args, extra)
        for name, run in (("TRL SFTTrainer", run_trl_sft), ("HF Trainer", run_hf_sft)):
            peer = tokens_per_step / run(tmp / f"{name.split()[-1]}_{method}", base, samples, args, lora)
            rows.append((f"SFT {method}", name + (" + PEFT" if lora else ""), ours, peer))
    if "dpo" in only:
        pairs = [(q, a, " ".join(reversed(a.split()))) for q, a in corpus]
        dprefix = preprocess(tmp, tok, [{"instruction": q, "input": "", "chosen": c, "rejected": r}
                                        for q, c, r in pairs], "AlpacaStylePairwiseHandler", args.seq)
        pds = PairwiseDataset(dprefix)  # the pairs' own real tokens (chosen + rejected), not the SFT samples'
        pair_tokens = sum(len(pds[i]["chosen_input_ids"]) + len(pds[i]["rejected_input_ids"])
                          for i in range(len(pds))) / len(pds) * args.batch
        ours = pair_tokens / run_llmctl(tmp, base, dprefix, "dpo", args)
        peer = pair_tokens / run_trl_dpo(tmp / "trl_dpo", base, tok, pairs, args)
        rows.append(("DPO step (policy + frozen reference)", "TRL DPOTrainer", ours, peer))
    print(f"\n{'what':<38} {'peer':<24} {'llmctl tok/s':>13} {'peer tok/s':>11} {'ratio':>6}")
    for what, peer, a, b in rows:
        print(f"{what:<38} {peer:<24} {a:>13,.0f} {b:>11,.0f} {a / b:>5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
