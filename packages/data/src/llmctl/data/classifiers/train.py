"""`llmctl data train-classifier`: labelled rows -> a classifier dir, with held-out metrics per label.

Every check that can fail on the user's input (architecture, options, labels, task, split) runs before any
training, and the directory is built under a temp name and renamed when complete (`atomic_dir`): a failed run
leaves nothing behind, an existing classifier is replaced only by a finished one. The held-out metrics are
computed by loading the saved model through the same `load_classifier` path `classify` uses, so they describe
exactly what scoring will do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from llmctl.core.errors import UserError

from .labelled import describe, read_labelled
from .meta import Meta, backend
from .metrics import classification_metrics, regression_metrics

DEFAULT_COLUMN = {"binary": "quality_score", "regression": "quality_score", "multiclass": "domain"}


def train_classifier(
    inputs: Sequence[str],
    output_dir: str | os.PathLike,
    arch: str = "fasttext",
    task: str = "auto",
    text_key: str | None = None,
    label_key: str = "label",
    labels_from_source: bool = False,
    val_fraction: float = 0.1,
    positive: str | None = None,
    column: str | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    quiet: bool = False,
) -> Meta:
    """Train `arch` on the labelled `inputs` into `output_dir`; returns the metadata (metrics included)."""
    from llmctl.core.io import atomic_dir

    mod = backend(arch)
    opts = mod.options({**(options or {}), "seed": seed})
    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if task not in ("auto", "binary", "multiclass", "regression"):
        raise UserError(f"--task {task}: expected auto, binary, multiclass or regression")
    ds = read_labelled(inputs, text_key, label_key, labels_from_source, task, positive, seed)
    if arch == "fasttext" and ds.task == "regression":
        raise UserError(
            "--arch fasttext does binary and multiclass classification; regression needs --arch bert"
        )
    train, val = ds.split(val_fraction)
    col = column or DEFAULT_COLUMN[ds.task]
    meta = Meta(
        arch=arch,
        task=ds.task,
        labels=ds.labels if ds.task != "regression" else [col],
        column=col,
        positive=ds.positive,
        label_range=[float(ds.y.min()), float(ds.y.max())] if ds.task == "regression" else None,
        options=opts,
        trained_on={
            "inputs": [str(i) for i in inputs],
            "labels_from_source": labels_from_source,
            "text_key": text_key,
            "label_key": None if labels_from_source else label_key,
            "rows_per_file": ds.sources,
            "skipped_empty": ds.skipped_empty,
            "seed": seed,
            "val_fraction": val_fraction,
            "train": describe(train),
            "val": describe(val),
        },
    )
    with atomic_dir(output_dir) as tmp:
        mod.train(train, meta, Path(tmp), quiet=quiet)
        meta.metrics = (
            evaluate(mod.load(Path(tmp), meta, device=opts.get("device", "auto")), val) if val.texts else {}
        )
        meta.save(Path(tmp))
    return meta


def evaluate(classifier, val) -> dict[str, Any]:
    """Held-out metrics of a loaded classifier on the `val` rows."""
    meta = classifier.meta
    out = classifier.predict([meta.prepare(t) for t in val.texts])
    if meta.task == "regression":
        return regression_metrics(val.y, out)
    return classification_metrics(val.y, out, meta.labels, meta.task, meta.positive, meta.threshold)
