"""The labelled set `train-classifier` learns from: rows with a text and a label, or labelled sources.

Two ways in, as the practice goes: a labelled file (`--text-key`, `--label-key`: a few thousand rows an LLM or
a person annotated), or `--labels-from-source` (`--input good.jsonl=1 --input spam.jsonl=0`: "this source is
high quality, that one is not", the cheap route). Either way every row is read through the one reader path, so
a missing label or text is named by file and row as every other stage names it. The task (binary, multiclass,
regression) follows from the labels unless given, and the held-out split is stratified per class by a hash of
(file, row, seed), so it is the same on every run and machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from llmctl.core.errors import UserError

from ..hashing import doc_uniform


@dataclass
class Labelled:
    """Texts with labels: `y` holds class indices (classification) or values (regression)."""

    texts: list[str]
    y: np.ndarray
    task: str
    labels: list[str]  # class names in index order (regression: empty)
    positive: str | None
    u: np.ndarray  # per-row uniform draw from (file, row, seed): the split key
    sources: dict[str, int]  # rows read per input file
    skipped_empty: int = 0

    def subset(self, idx: np.ndarray) -> "Labelled":
        return Labelled(
            [self.texts[i] for i in idx],
            self.y[idx],
            self.task,
            self.labels,
            self.positive,
            self.u[idx],
            self.sources,
            0,
        )

    def split(self, val_fraction: float) -> tuple["Labelled", "Labelled"]:
        """(train, val): per class, the rows with the smallest draws go to val (at least one of each class
        with two or more rows), so a small class is never missing from either side."""
        n = len(self.texts)
        val = np.zeros(n, dtype=bool)
        if val_fraction > 0:
            groups = (
                [np.arange(n)]
                if self.task == "regression"
                else [np.flatnonzero(self.y == c) for c in range(len(self.labels))]
            )
            for g in groups:
                if len(g) < 2:
                    continue
                k = min(len(g) - 1, max(1, int(round(val_fraction * len(g)))))
                val[g[np.argsort(self.u[g], kind="stable")[:k]]] = True
        return self.subset(np.flatnonzero(~val)), self.subset(np.flatnonzero(val))


def _canonical(label: Any) -> str | float:
    """A label as a class name (str) or a number; booleans are 'true'/'false', 1.0 is '1'."""
    if isinstance(label, bool):
        return "true" if label else "false"
    if isinstance(label, (int, float)):
        return float(label)
    return str(label)


def _class_name(label: str | float) -> str:
    if isinstance(label, float):
        return str(int(label)) if label.is_integer() else repr(label)
    return label


def _parse_source(spec: str) -> tuple[str, str]:
    path, sep, label = str(spec).rpartition("=")
    if not sep or not path or not label:
        raise UserError(
            f"--labels-from-source: --input {spec} needs a label, as PATH=LABEL (e.g. good.jsonl=1)"
        )
    return path, label


def read_labelled(
    inputs: Sequence[str],
    text_key: str | None = None,
    label_key: str | None = "label",
    labels_from_source: bool = False,
    task: str = "auto",
    positive: str | None = None,
    seed: int = 0,
) -> Labelled:
    """Every row of `inputs` as (text, label), the task decided, the labels encoded; bad input is one line."""
    from ..readers import expand_inputs
    from ..readers.rows import file_text_key, iter_file_records, text_of

    sources: list[tuple[str, str | None]] = []  # (file, label of the whole source or None)
    for spec in inputs:
        path, label = _parse_source(spec) if labels_from_source else (str(spec), None)
        sources += [(f, label) for f in expand_inputs([path])]
    root = os.path.commonpath([os.path.abspath(os.path.dirname(f)) for f, _ in sources])
    texts: list[str] = []
    raw: list[str | float] = []
    draws: list[np.ndarray] = []
    counts: dict[str, int] = {}
    empty = 0
    first_where: dict[str | float, str] = {}
    for path, source_label in sources:
        key = file_text_key(path, text_key)
        rows = []
        for row, where, rec in iter_file_records(path):
            text = text_of(rec, key, where)
            if source_label is not None:
                label: Any = source_label
            else:
                if label_key not in rec:
                    cols = ", ".join(map(str, rec)) or "none"
                    raise UserError(f"{where}: no label column '{label_key}' (columns: {cols})")
                label = rec[label_key]
                if label is None or (isinstance(label, str) and not label.strip()):
                    raise UserError(f"{where}: empty label in column '{label_key}'")
                if not isinstance(label, (str, int, float, bool)):
                    raise UserError(
                        f"{where}: label '{label_key}' is {type(label).__name__}, expected a "
                        "class name or a number"
                    )
            if not text.strip():
                empty += 1
                continue
            canon = _canonical(label)
            first_where.setdefault(canon, where)
            texts.append(text)
            raw.append(canon)
            rows.append(row)
        counts[path] = len(rows)
        rel = os.path.relpath(os.path.abspath(path), root)
        draws.append(doc_uniform(rel, np.asarray(rows, dtype=np.int64), seed))
    what = ", ".join(str(s) for s in inputs)
    if not texts:
        raise UserError(f"{what}: no labelled rows with text")
    y, labels, task, positive = encode(raw, task, positive, what)
    return Labelled(texts, y, task, labels, positive, np.concatenate(draws), counts, empty)


def encode(raw: list[str | float], task: str, positive: str | None, what: str):
    """(y, class names, task, positive label) from canonical labels; a set that cannot train is one line."""
    numeric = all(isinstance(v, float) for v in raw)
    if task == "auto":
        task = "regression" if numeric and any(not v.is_integer() for v in raw) else "classes"
    if task == "regression":
        if not numeric:
            bad = next(v for v in raw if not isinstance(v, float))
            raise UserError(f"{what}: --task regression needs numeric labels, found '{bad}'")
        y = np.asarray(raw, dtype=np.float64)
        if len(np.unique(y)) < 2:
            raise UserError(f"{what}: every label is {y[0]:g}; a regression needs at least two values")
        return y, [], "regression", None
    names = [_class_name(v) for v in raw]
    classes = sorted(set(names), key=lambda s: (not _is_number(s), float(s) if _is_number(s) else 0, s))
    if len(classes) < 2:
        raise UserError(f"{what}: only one class ('{classes[0]}'); a classifier needs at least two")
    if task == "classes":
        task = "binary" if len(classes) == 2 else "multiclass"
    if task == "binary":
        if len(classes) != 2:
            raise UserError(
                f"{what}: --task binary needs two classes, found {len(classes)}: {', '.join(classes[:10])}"
            )
        positive = _positive(classes, positive, what)
    elif task == "multiclass":
        positive = None
    else:
        raise UserError(f"--task {task}: expected auto, binary, multiclass or regression")
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index[n] for n in names], dtype=np.int64), classes, task, positive


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _positive(classes: list[str], positive: str | None, what: str) -> str:
    """The label whose probability is the score: given, or the obvious one of 0/1 and false/true."""
    if positive is not None:
        if str(positive) not in classes:
            raise UserError(f"--positive {positive}: not one of the labels ({', '.join(classes)})")
        return str(positive)
    for neg, pos in (("0", "1"), ("false", "true"), ("-1", "1")):
        if set(classes) == {neg, pos}:
            return pos
    raise UserError(
        f"{what}: binary labels '{classes[0]}' and '{classes[1]}': pass --positive LABEL "
        "(the one whose probability is the score)"
    )


def describe(ds: Labelled) -> dict[str, Any]:
    """Rows per label (or the value range), for the training report."""
    if ds.task == "regression":
        return {
            "rows": len(ds.texts),
            "min": float(ds.y.min()),
            "max": float(ds.y.max()),
            "mean": float(ds.y.mean()),
        }
    counts = np.bincount(ds.y, minlength=len(ds.labels))
    return {"rows": len(ds.texts), "per_label": {c: int(n) for c, n in zip(ds.labels, counts)}}
