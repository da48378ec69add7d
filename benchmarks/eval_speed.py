"""MMLU 5-shot speed: `llmctl eval run --task mmlu --shots 5` against lm-evaluation-harness (lm_eval, HF backend)
on the same exported model and the same local CSVs, in one run. Prints both accuracies, questions/s, the ratio,
and how many questions the two predicted alike.

The peer gets the identical prompts through a custom lm_eval task per subject (local CSVs via the `csv`
dataset builder, hendrycks' header with its two spaces, the first 5 dev rows as shots, " A".." D" as the
choices), so accuracies must agree. Both are timed end to end in this process (model load, data, scoring);
lm_eval's bootstrap stderr is switched off. If lm_eval is not installed (it is a bench extra in
requirements-test.txt), the peer is a plain transformers loop (one forward per full prompt), and the output
says so.

    python benchmarks/eval_speed.py                      # 20 questions per subject of the 10 fixture subjects
    python benchmarks/eval_speed.py --limit 0            # all 1221
    python benchmarks/eval_speed.py --model HF_DIR --data-dir path/to/mmlu/data
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / ".." / "shared" / "fixtures"
LETTERS = "ABCD"


def build_model(out_dir: Path, hidden: int, layers: int) -> Path:
    """A random LlamaForCausalLM with the minimind tokenizer (6400 vocab), exported the HF way."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(FIXTURES / "tokenizers" / "minimind"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 8 * 8,
                      num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 128,
                      max_position_embeddings=2048, initializer_range=0.2, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    return out_dir


def run_llmctl(model: Path, data: Path, subjects: list[str], limit: int | None, batch: int | None, out: Path):
    from llmctl.eval.runner import run_eval

    t = time.perf_counter()
    results, _ = run_eval(["mmlu"], model, out, data_dirs={None: data}, shots=5, limit=limit, batch_size=batch,
                          subjects=subjects)
    seconds = time.perf_counter() - t
    r = results[0]
    preds = {(x["subject"], int(x["id"])): x["pred"] for x in r.records}
    return r.metrics["acc"], r.metrics["total"], seconds, preds


def lm_eval_task(subject: str, data: Path) -> dict:
    return {
        "task": f"llmctl_bench_mmlu_{subject}",
        "dataset_path": "csv",
        "dataset_kwargs": {"data_files": {"test": str(data / "test" / f"{subject}_test.csv"),
                                          "dev": str(data / "dev" / f"{subject}_dev.csv")},
                           "column_names": ["question", "A", "B", "C", "D", "answer"], "keep_default_na": False},
        "test_split": "test", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
        "output_type": "multiple_choice",
        "description": f"The following are multiple choice questions (with answers) about  {subject.replace('_', ' ')}.\n\n",
        "doc_to_text": "{{question}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:",
        "doc_to_choice": list(LETTERS),
        "doc_to_target": "{{['A','B','C','D'].index(answer)}}",
        "target_delimiter": " ", "fewshot_delimiter": "\n\n",
        "metric_list": [{"metric": "acc", "higher_is_better": True}],
    }


def run_lm_eval(model: Path, data: Path, subjects: list[str], limit: int | None, batch: int | None):
    import lm_eval

    t = time.perf_counter()
    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model},dtype=float32", device="cpu",
                                  tasks=[lm_eval_task(s, data) for s in subjects], num_fewshot=5,
                                  batch_size=batch or "auto", limit=limit, bootstrap_iters=0, log_samples=True)
    seconds = time.perf_counter() - t
    preds, correct = {}, 0
    for s in subjects:
        for sample in res["samples"][f"llmctl_bench_mmlu_{s}"]:
            scores = [float(r[0][0]) for r in sample["resps"]]
            preds[(s, int(sample["doc_id"]))] = LETTERS[max(range(4), key=scores.__getitem__)]
            correct += int(sample["acc"])
    return correct / len(preds), len(preds), seconds, preds


def run_transformers_loop(model: Path, data: Path, subjects: list[str], limit: int | None, batch: int | None):
    """Fallback peer: the obvious loop, one transformers forward per full 5-shot prompt."""
    import csv

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def rows(path):
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.reader(f))

    def example(r, answer):
        text = r[0] + "".join(f"\n{letter}. {c}" for letter, c in zip(LETTERS, r[1:5])) + "\nAnswer:"
        return text + (f" {r[5]}\n\n" if answer else "")

    t = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(str(model)).float().eval()
    tok = AutoTokenizer.from_pretrained(str(model))
    ids = [tok(" " + letter, add_special_tokens=False).input_ids[0] for letter in LETTERS]
    preds, correct = {}, 0
    for s in subjects:
        head = (f"The following are multiple choice questions (with answers) about  {s.replace('_', ' ')}.\n\n"
                + "".join(example(r, True) for r in rows(data / "dev" / f"{s}_dev.csv")[:5]))
        for i, r in enumerate(rows(data / "test" / f"{s}_test.csv")[:limit]):
            with torch.no_grad():
                logits = hf(**tok(head + example(r, False), return_tensors="pt")).logits[0, -1, ids]
            preds[(s, i)] = LETTERS[int(logits.argmax())]
            correct += preds[(s, i)] == r[5]
    return correct / len(preds), len(preds), time.perf_counter() - t, preds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="HF model dir (default: a random llama built here)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--data-dir", type=Path, default=FIXTURES / "mmlu" / "data")
    ap.add_argument("--limit", type=int, default=20, help="questions per subject (0 = all)")
    ap.add_argument("--batch-size", type=int, default=8, help="the same for both (0 = each one's auto)")
    ap.add_argument("--peer", choices=["lm_eval", "transformers"], default=None,
                    help="default: lm_eval if installed, else the plain transformers loop")
    args = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("LLMCTL_PROGRESS", "0")
    logging.disable(logging.WARNING)
    import torch

    from llmctl.eval.loaders import MMLU

    limit, batch = args.limit or None, args.batch_size or None
    peer = args.peer
    if peer is None:
        try:
            import lm_eval  # noqa: F401
            import lm_eval.models.huggingface  # noqa: F401  (needs the [hf] extra: accelerate)

            peer = "lm_eval"
        except ImportError as e:
            print(f"lm_eval not usable here ({e}); peer falls back to a plain transformers loop", file=sys.stderr)
            peer = "transformers"
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_model(Path(tmp) / "model", args.hidden, args.layers)
        data = MMLU.resolve_dir(args.data_dir)
        subjects = MMLU.subjects(data, "test")
        print(f"model {model} | {len(subjects)} subjects, limit {limit or 'all'} per subject, "
              f"5-shot, batch {batch or 'auto'}, torch threads {torch.get_num_threads()}")
        ours = run_llmctl(model, data, subjects, limit, batch, Path(tmp) / "out")
        theirs = (run_lm_eval if peer == "lm_eval" else run_transformers_loop)(model, data, subjects, limit, batch)
    same = sum(ours[3].get(k) == v for k, v in theirs[3].items())
    peer_name = "lm_eval (HF backend)" if peer == "lm_eval" else "plain transformers loop"
    for name, (acc, n, sec, _) in (("llmctl eval", ours), (peer_name, theirs)):
        print(f"{name:<24} acc {acc:.4f}  {n} questions in {sec:7.2f} s  = {n / sec:7.2f} questions/s")
    print(f"same prediction on {same}/{len(theirs[3])} questions")
    print(f"speed ratio llmctl / {peer_name}: {(ours[1] / ours[2]) / (theirs[1] / theirs[2]):.2f}x")


if __name__ == "__main__":
    main()
