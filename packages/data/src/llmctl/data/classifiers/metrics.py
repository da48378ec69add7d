"""Held-out metrics for a trained classifier, in numpy (llmctl-data needs no scikit-learn; the tests check
these against scikit-learn's).

Binary: accuracy at the threshold, ROC AUC of the positive score, precision/recall/F1 per label, and the
threshold that maximises F1. Multiclass: accuracy, macro F1, per label precision/recall/F1, one-vs-rest AUC.
Regression: MSE, MAE and Pearson correlation.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Mann-Whitney AUC (ties count half): P(score of a positive > score of a negative)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average ranks over ties
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def per_label(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    """precision, recall, F1 and support per label (0 where undefined, as scikit-learn's zero_division=0)."""
    out = {}
    for i, name in enumerate(labels):
        tp = int(((y_pred == i) & (y_true == i)).sum())
        fp = int(((y_pred == i) & (y_true != i)).sum())
        fn = int(((y_pred != i) & (y_true == i)).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        out[name] = {"precision": p, "recall": r, "f1": f, "support": int((y_true == i).sum())}
    return out


def best_f1_threshold(positive: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (predict positive when score >= t) with the highest F1 of the positive label."""
    order = np.argsort(-scores, kind="mergesort")
    s, pos = scores[order], positive[order].astype(np.int64)
    tp = np.cumsum(pos)
    fp = np.cumsum(1 - pos)
    last = np.r_[s[1:] != s[:-1], True]  # a threshold sits after the last of equal scores
    f1 = 2 * tp / (tp + fp + pos.sum())
    f1 = np.where(last, f1, -1.0)
    return float(s[int(np.argmax(f1))])


def classification_metrics(
    y: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    task: str,
    positive: str | None = None,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Metrics of [N, labels] probabilities against class indices `y`."""
    if task == "binary":
        pos = labels.index(positive)
        score = probs[:, pos]
        pred = np.where(score >= threshold, pos, 1 - pos)
        return {
            "rows": int(len(y)),
            "accuracy": float((pred == y).mean()),
            "auc": roc_auc(y == pos, score),
            "threshold": threshold,
            "best_f1_threshold": best_f1_threshold(y == pos, score),
            "per_label": per_label(y, pred, labels),
        }
    pred = probs.argmax(axis=1)
    table = per_label(y, pred, labels)
    for i, name in enumerate(labels):
        table[name]["auc"] = roc_auc(y == i, probs[:, i])
    return {
        "rows": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(np.mean([t["f1"] for t in table.values()])),
        "per_label": table,
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    err = pred - y
    corr = float(np.corrcoef(y, pred)[0, 1]) if len(y) > 1 and np.std(pred) > 0 and np.std(y) > 0 else None
    return {
        "rows": int(len(y)),
        "mse": float(np.mean(err**2)),
        "mae": float(np.mean(np.abs(err))),
        "pearson": corr,
    }


def summary_line(m: dict[str, Any], task: str) -> str:
    """One line of the metrics that matter for the task, for the CLI."""
    if not m:
        return "no held-out rows (--val-fraction 0)"
    if task == "regression":
        corr = "n/a" if m["pearson"] is None else f"{m['pearson']:.3f}"
        return f"held-out {m['rows']} rows: MSE {m['mse']:.4f}, MAE {m['mae']:.4f}, Pearson {corr}"
    head = f"held-out {m['rows']} rows: accuracy {m['accuracy']:.3f}"
    if task == "binary":
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        head += f", AUC {auc}"
    else:
        head += f", macro F1 {m['macro_f1']:.3f}"
    labels = "; ".join(
        f"{k}: P {v['precision']:.2f} R {v['recall']:.2f} F1 {v['f1']:.2f} (n={v['support']})"
        for k, v in m["per_label"].items()
    )
    return f"{head}\n  per label: {labels}"
