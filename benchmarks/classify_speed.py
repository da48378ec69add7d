"""classify speed against its peers, measured in one run on the same model and documents.

    python benchmarks/classify_speed.py                      # fastText: llmctl classify vs datatrove's filter
    python benchmarks/classify_speed.py --bert --device cuda # also BERT: llmctl's scorer vs a pipeline() loop

fastText: `llmctl data classify` (one process, one shard: read jsonl, score, write jsonl with the column)
against datatrove's `FastTextClassifierFilter` in a one-task `LocalPipelineExecutor` (JsonlReader -> filter,
labels saved in the metadata -> JsonlWriter), both on the same `model.bin` and corpus; the scores of the two
are compared document by document. BERT: a `BertForSequenceClassification` of the given size (random weights
and a WordPiece tokenizer trained on the corpus: speed does not depend on what the weights learnt) scored by
llmctl's classifier (length-sorted sub-batches, inference mode) and by a plain transformers
`pipeline("text-classification")` called once per text, at equal outputs (max difference printed).
Needs `pip install -r requirements-bench.txt` (datatrove, orjson, fasteners).
A benchmark, not a test: nothing asserts speed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "data"), str(REPO / "tests")]


def corpus(n: int, seed: int = 0) -> list[str]:
    """Prose (Alpaca, Shakespeare) and built spam, cut at random lengths, `n` documents."""
    from quality_helpers import prose_texts, spam_texts

    base = prose_texts() + spam_texts(1000, seed)
    r = random.Random(seed)
    out = []
    for _ in range(n):
        t = r.choice(base)
        out.append(t[: r.randint(100, len(t))] if len(t) > 100 else t)
    return out


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": str(i), "text": t}, ensure_ascii=False) + "\n")
    return path


def bench_fasttext(tmp: Path, n: int) -> None:
    from quality_helpers import write_quality_set

    from llmctl.data.classifiers.stage import run_classify
    from llmctl.data.classifiers.train import train_classifier

    clf = tmp / "clf"
    train_classifier([str(write_quality_set(tmp / "labelled.jsonl", 400))], clf, quiet=True)
    data = write_jsonl(tmp / "corpus" / "docs.jsonl", corpus(n))
    t0 = time.perf_counter()
    run_classify(
        [str(data)], tmp / "llmctl", [(str(clf), None)], rows_per_file=10**9, num_shards=1, workers=1
    )
    ours = time.perf_counter() - t0

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import FastTextClassifierFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    # remove_labels with an unreachable score keeps every document (datatrove fails with neither list given);
    # datatrove checks for the `fasttext-numpy2-wheel` distribution; it and llmctl's `fasttext-numpy2` are
    # numpy-2 builds of the same `fasttext` module, so the filter is given the one installed here
    FastTextClassifierFilter._requires_dependencies = ["fasteners"]
    pipeline = [
        JsonlReader(str(data.parent)),
        FastTextClassifierFilter(str(clf / "model.bin"), remove_labels=[("0", 2.0)], newline_replacement=" "),
        JsonlWriter(str(tmp / "datatrove"), compression=None),
    ]
    t0 = time.perf_counter()
    LocalPipelineExecutor(pipeline, tasks=1, workers=1, logging_dir=str(tmp / "dt_logs")).run()
    peer = time.perf_counter() - t0

    ours_scores = {}
    for f in (tmp / "llmctl").glob("*.jsonl"):
        for line in f.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            ours_scores[r["id"]] = r["quality_score"]
    diff = 0.0
    for f in (tmp / "datatrove").glob("*.jsonl"):
        for line in f.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            diff = max(diff, abs(min(1.0, r["metadata"]["__label__1"]) - ours_scores[r["id"]]))
    print(
        f"fastText classify, {n} docs: llmctl {n / ours:,.0f} docs/s, datatrove {n / peer:,.0f} docs/s, "
        f"ratio {peer / ours:.2f}x (max score difference {diff:.1e})"
    )


def bench_bert(tmp: Path, n: int, layers: int, hidden: int, max_length: int, device: str) -> None:
    import numpy as np
    import torch
    from transformers import BertConfig, BertForSequenceClassification, pipeline
    from transformers.utils import logging

    logging.disable_progress_bar()

    from llmctl.data.classifiers.bert_backend import _wordpiece
    from llmctl.data.classifiers.meta import Meta, load_classifier

    texts = corpus(n, seed=1)
    d = tmp / "bert"
    tok = _wordpiece(texts, 8000, max_length)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden,
        max_position_embeddings=max_length,
        num_labels=2,
        id2label={0: "0", 1: "1"},
        label2id={"0": 0, "1": 1},
        pad_token_id=tok.pad_token_id,
    )
    BertForSequenceClassification(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    meta = Meta(
        arch="bert",
        task="binary",
        labels=["0", "1"],
        column="quality_score",
        positive="1",
        options={"max_length": max_length},
    )
    meta.save(d)

    clf = load_classifier(d, device=device, threads=None)
    prepared = [meta.prepare(t) for t in texts]
    clf.predict(prepared[:64])  # warm-up
    t0 = time.perf_counter()
    ours = np.concatenate([clf.predict(prepared[i : i + 500]) for i in range(0, n, 500)])[:, 1]
    t_ours = time.perf_counter() - t0

    pipe = pipeline("text-classification", model=str(d), tokenizer=str(d), device=device, top_k=None)
    pipe(prepared[0], truncation=True, max_length=max_length)  # warm-up
    t0 = time.perf_counter()
    ref = []
    for t in prepared:
        scores = pipe(t, truncation=True, max_length=max_length)
        scores = scores[0] if scores and isinstance(scores[0], list) else scores
        ref.append(next(s["score"] for s in scores if s["label"] == "1"))
    t_peer = time.perf_counter() - t0
    diff = float(np.abs(np.asarray(ref) - ours).max())
    print(
        f"BERT scoring ({layers} layers, hidden {hidden}, max length {max_length}, {device}), {n} docs: "
        f"llmctl {n / t_ours:,.0f} docs/s, pipeline loop {n / t_peer:,.0f} docs/s, "
        f"ratio {t_peer / t_ours:.2f}x "
        f"(max probability difference {diff:.1e})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=20_000, help="fastText corpus size")
    p.add_argument("--bert", action="store_true", help="also benchmark BERT scoring")
    p.add_argument("--bert-docs", type=int, default=2_000)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-fasttext", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_fasttext:
            bench_fasttext(Path(tmp) / "ft", args.docs)
        if args.bert:
            bench_bert(
                Path(tmp) / "bert", args.bert_docs, args.layers, args.hidden, args.max_length, args.device
            )


if __name__ == "__main__":
    main()
