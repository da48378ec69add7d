"""One classifier interface over every backend: the metadata file, the text preprocessing, the columns.

A classifier directory holds the backend's own files (fastText's `model.bin`; an HF model dir for BERT, which
`AutoModelForSequenceClassification` loads as-is) plus `llmctl_classifier.json`: what was trained (arch, task,
labels, positive label), how text is prepared before scoring, the thresholds, the column(s) `classify` writes
and the held-out metrics. Training and scoring both prepare text through `Meta.prepare`, so what the model saw
when it was trained is what it sees when it scores. A directory written by another format version is refused
with one line rather than scored with guessed semantics.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.core.errors import UserError

META_FILE = "llmctl_classifier.json"
FORMAT_VERSION = 1
TASKS = ("binary", "multiclass", "regression")

# The built-in backends, registered through the plugin bus's `register_classifiers` like a third party's:
# name -> module with `train(train, val, options, out_dir, quiet)` and `load(dir, meta, **runtime)`.
BUILTIN_ARCHS = {
    "fasttext": "llmctl.data.classifiers.fasttext_backend",
    "bert": "llmctl.data.classifiers.bert_backend",
}


def archs() -> list[str]:
    from llmctl.core.plugins import get_bus

    return sorted(get_bus().registry("classifiers"))


def backend(arch: str):
    """The backend module for `arch` from the plugin bus; an unknown name is one line listing the known ones."""
    import importlib

    from llmctl.core.plugins import lookup

    if arch not in archs():
        raise UserError(f"--arch {arch}: unknown classifier architecture; available: {', '.join(archs())}")
    value = lookup("classifiers", arch)
    return importlib.import_module(value) if isinstance(value, str) else value


@dataclass
class Meta:
    """`llmctl_classifier.json`: everything `classify` needs besides the backend's weights."""

    arch: str
    task: str
    labels: list[str]  # class names in model output order (regression: [column name])
    column: str  # binary/regression: the score column; multiclass: the label column (+ "<column>_score")
    positive: str | None = None  # binary: the label whose probability is the score
    threshold: float = 0.5  # binary: the decision threshold the held-out metrics use
    label_range: list[float] | None = None  # regression: [min, max] of the training labels (report bins)
    text: dict[str, Any] = field(default_factory=lambda: {"newlines": " ", "max_chars": 20_000})
    options: dict[str, Any] = field(default_factory=dict)  # the backend's training options
    trained_on: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    llmctl_classifier: int = FORMAT_VERSION

    def prepare(self, text: str) -> str:
        """The text as the model sees it: cut to `max_chars`, newlines replaced (fastText reads one line)."""
        text = text[: int(self.text.get("max_chars") or len(text))]
        repl = self.text.get("newlines")
        if repl is not None:
            text = text.replace("\r\n", repl).replace("\n", repl).replace("\r", repl)
        return text

    def score_columns(self) -> list[str]:
        """Numeric columns `classify` adds (what the report summarises and `sample`/`clean` filter on)."""
        return [f"{self.column}_score"] if self.task == "multiclass" else [self.column]

    def columns(self, outputs: np.ndarray) -> dict[str, list]:
        """The columns for a batch: `outputs` is [N, labels] probabilities, or [N] values for regression."""
        if self.task == "regression":
            return {self.column: [round(float(v), 6) for v in outputs]}
        if self.task == "binary":
            pos = self.labels.index(self.positive)
            return {self.column: [round(float(p), 6) for p in outputs[:, pos]]}
        best = outputs.argmax(axis=1)
        return {
            self.column: [self.labels[i] for i in best],
            f"{self.column}_score": [round(float(outputs[r, i]), 6) for r, i in enumerate(best)],
        }

    def save(self, directory: Path) -> None:
        from llmctl.core.io import write_json_atomic

        write_json_atomic(Path(directory) / META_FILE, asdict(self))


def read_meta(directory: str | Path) -> Meta:
    """The metadata of a classifier dir; a missing file, another format version or a bad field is one line."""
    d = Path(directory)
    path = d / META_FILE
    if not d.is_dir():
        raise UserError(f"--classifier {d}: no such directory")
    if not path.is_file():
        raise UserError(f"--classifier {d}: no {META_FILE} (not written by `llmctl data train-classifier`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None
    version = raw.get("llmctl_classifier") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise UserError(
            f"{path}: classifier format version {version!r}, this llmctl reads version {FORMAT_VERSION}; "
            "retrain it with `llmctl data train-classifier`"
        )
    try:
        meta = Meta(**raw)
    except TypeError as e:
        raise UserError(f"{path}: {e}") from None
    if meta.task not in TASKS or meta.arch not in archs():
        raise UserError(f"{path}: unknown task '{meta.task}' or arch '{meta.arch}'")
    return meta


class Classifier:
    """A loaded classifier: `predict(texts)` gives [N, labels] probabilities (regression: [N] values)."""

    def __init__(self, meta: Meta):
        self.meta = meta

    def predict(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def columns(self, texts: list[str]) -> dict[str, list]:
        return self.meta.columns(self.predict([self.meta.prepare(t) for t in texts]))


def load_classifier(directory: str | Path, **runtime: Any) -> Classifier:
    """The classifier in `directory` (any backend), ready to score; `runtime`: device, threads, batching."""
    meta = read_meta(directory)
    return backend(meta.arch).load(Path(directory), meta, **runtime)
