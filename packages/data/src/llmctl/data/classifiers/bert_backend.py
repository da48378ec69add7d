"""BERT backend: an encoder with a classification or regression head, through transformers.

The encoder comes from a local HF dir (`--init DIR`: any `AutoModelForSequenceClassification` encoder, its
head new) or is a small `BertForSequenceClassification` initialised here, with a WordPiece tokenizer trained
on the labelled texts: a few layers of width 64 train on CPU in minutes at toy size; the same code trains a
real one on a GPU. The result is saved as an HF dir (`config.json` with id2label, `model.safetensors`, the
tokenizer), so `AutoModelForSequenceClassification.from_pretrained(D)` loads it without llmctl.

Scoring sorts a batch by token length and cuts it into sub-batches under a token budget, so padding is at most
the length difference of neighbours, and runs under `torch.inference_mode`. Torch is imported only here (the
rest of llmctl-data is torch-free); a missing torch is one line saying how to install it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.core.errors import UserError, require_torch

from .meta import Classifier, Meta

DEFAULTS = {
    "init": None,
    "layers": 2,
    "hidden": 64,
    "heads": 2,
    "max_length": 128,
    "vocab_size": 4000,
    "epoch": 3,
    "lr": 5e-4,
    "batch_size": 32,
    "weight_decay": 0.01,
    "warmup": 0.06,
    "seed": 0,
    "device": "auto",
    "threads": None,
}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_TOKENS = 16_384  # tokens per scoring sub-batch (rows x padded length)


def options(given: dict[str, Any]) -> dict[str, Any]:
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise UserError(
            f"--arch bert: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}"
        )
    opts = {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
    if opts["init"] is not None and not Path(opts["init"]).is_dir():
        raise UserError(
            f"--init {opts['init']}: not a directory (a local HF encoder dir; nothing is downloaded)"
        )
    if opts["init"] is None and opts["hidden"] % opts["heads"]:
        raise UserError(f"--hidden {opts['hidden']} is not a multiple of --heads {opts['heads']}")
    return opts


def pick_device(name: str) -> str:
    torch = require_torch("--arch bert")
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _wordpiece(texts: list[str], vocab_size: int, max_length: int):
    """A BERT-style WordPiece tokenizer trained on the labelled texts (CJK split per character)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def _build(meta: Meta, texts: list[str], opts: dict[str, Any]):
    """(tokenizer, model): from `--init` (new head) or a small BERT from scratch."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
    )

    regression = meta.task == "regression"
    head = {
        "num_labels": 1 if regression else len(meta.labels),
        "problem_type": "regression" if regression else "single_label_classification",
    }
    if not regression:
        head["id2label"] = dict(enumerate(meta.labels))
        head["label2id"] = {name: i for i, name in enumerate(meta.labels)}
    if opts["init"]:
        try:
            tokenizer = AutoTokenizer.from_pretrained(opts["init"], local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(
                opts["init"], local_files_only=True, **head
            )
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"--init {opts['init']}: cannot load an HF encoder there ({first})") from None
        return tokenizer, model
    tokenizer = _wordpiece(texts, int(opts["vocab_size"]), int(opts["max_length"]))
    hidden = int(opts["hidden"])
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=int(opts["layers"]),
        num_attention_heads=int(opts["heads"]),
        intermediate_size=4 * hidden,
        max_position_embeddings=int(opts["max_length"]),
        pad_token_id=tokenizer.pad_token_id,
        **head,
    )
    return tokenizer, BertForSequenceClassification(config)


def _quiet_transformers() -> None:
    """No transformers progress bars for saving/loading a few MB (llmctl shows its own progress)."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def _padded(torch, ids: list[list[int]], pad_id: int, device):
    width = max(len(x) for x in ids)
    batch = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, x in enumerate(ids):
        batch[r, : len(x)] = torch.as_tensor(x, dtype=torch.long)
        mask[r, : len(x)] = 1
    return batch.to(device), mask.to(device)


def train(train_set, meta: Meta, out_dir: Path, quiet: bool = False) -> None:
    """Fine-tune (or train from scratch): AdamW, linear warmup and decay; save the HF dir into `out_dir`."""
    torch = require_torch("--arch bert")
    from ..pipeline import make_bar

    opts = meta.options
    _quiet_transformers()
    if opts["threads"]:
        torch.set_num_threads(int(opts["threads"]))
    torch.manual_seed(int(opts["seed"]))
    texts = [meta.prepare(t) for t in train_set.texts]
    tokenizer, model = _build(meta, texts, opts)
    device = pick_device(opts["device"])
    model.to(device).train()
    max_length = int(opts["max_length"])
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    y = torch.as_tensor(train_set.y, dtype=torch.float32 if meta.task == "regression" else torch.long)
    bs = int(opts["batch_size"])
    per_epoch = math.ceil(len(ids) / bs)
    total = max(1, per_epoch * int(opts["epoch"]))
    warm = max(1, int(total * float(opts["warmup"])))
    optim = torch.optim.AdamW(
        model.parameters(), lr=float(opts["lr"]), weight_decay=float(opts["weight_decay"])
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    rng = np.random.default_rng(int(opts["seed"]))
    bar = make_bar(quiet, total=total, desc="train-classifier (bert)", unit="steps")
    try:
        for _ in range(int(opts["epoch"])):
            order = rng.permutation(len(ids))
            for b in range(per_epoch):
                rows = order[b * bs : (b + 1) * bs]
                batch, mask = _padded(torch, [ids[i] for i in rows], tokenizer.pad_token_id, device)
                out = model(input_ids=batch, attention_mask=mask, labels=y[rows].to(device))
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optim.step()
                sched.step()
                optim.zero_grad(set_to_none=True)
                bar.update(1)
                bar.set_postfix(loss=f"{out.loss.item():.4f}")
    finally:
        bar.close()
    model.eval().to("cpu")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


class BertClassifier(Classifier):
    """Length-sorted sub-batches under a token budget, inference mode, results put back in input order."""

    def __init__(self, meta: Meta, model, tokenizer, device: str, max_tokens: int = MAX_TOKENS):
        super().__init__(meta)
        self.model, self.tokenizer, self.device, self.max_tokens = model, tokenizer, device, max_tokens
        self.max_length = int(meta.options.get("max_length") or DEFAULTS["max_length"])

    def predict(self, texts: list[str]) -> np.ndarray:
        import torch

        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        regression = self.meta.task == "regression"
        out = np.zeros(len(texts) if regression else (len(texts), len(self.meta.labels)), dtype=np.float64)
        start = 0
        with torch.inference_mode():
            while start < len(order):
                end = start + 1  # grow while the padded sub-batch (rows x its longest row) fits the budget
                while end < len(order) and (end - start + 1) * lengths[order[end]] <= self.max_tokens:
                    end += 1
                rows = order[start:end]
                batch, mask = _padded(torch, [ids[i] for i in rows], self.tokenizer.pad_token_id, self.device)
                logits = self.model(input_ids=batch, attention_mask=mask).logits.float()
                res = logits[:, 0] if regression else torch.softmax(logits, dim=-1)
                out[rows] = res.cpu().numpy()
                start = end
        return out


def load(
    directory: Path, meta: Meta, device: str = "auto", threads: int | None = None, **_: Any
) -> BertClassifier:
    torch = require_torch("--arch bert")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _quiet_transformers()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--classifier {directory}: cannot load the BERT model ({first})") from None
    dev = pick_device(device)
    return BertClassifier(meta, model.eval().to(dev), tokenizer, dev)
