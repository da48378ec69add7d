"""fastText backend: the cheap baseline datatrove and FineWeb use, through fastText's own Python bindings.

The `fasttext-numpy2` build (`pip install 'llmctl-data[fasttext]'`) is the one that works with numpy 2 (the
original 0.9.3 wheel does not). The model is saved as fastText's `model.bin`, which `fasttext.load_model` and
datatrove's `FastTextClassifierFilter` read as they are. Labels are written as `__label__<index>` so any class
name (spaces, unicode) survives; the names live in llmctl's metadata. Training runs on one thread by default,
which makes it deterministic for a seed. fastText does classification only: a regression task is refused.

Word bigrams are on by default: besides being the better model, that build's training hits NaNs with plain
unigrams and no sub-words (a zero-bucket input matrix), whatever the learning rate.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.core.errors import UserError

from .meta import Classifier, Meta

MODEL_FILE = "model.bin"
INSTALL = "--arch fasttext needs fastText's bindings: pip install 'llmctl-data[fasttext]' (fasttext-numpy2)"
DEFAULTS = {
    "epoch": 10,
    "lr": 0.5,
    "dim": 64,
    "word_ngrams": 2,
    "min_count": 1,
    "minn": 0,
    "maxn": 0,
    "threads": 1,
    "seed": 0,
}


def _fasttext():
    try:
        import fasttext
    except ImportError:
        raise UserError(INSTALL) from None
    return fasttext


def options(given: dict[str, Any]) -> dict[str, Any]:
    """The training options: fastText's defaults for text classification, overridden by what was given."""
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise UserError(
            f"--arch fasttext: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}"
        )
    return {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}


def train(train_set, meta: Meta, out_dir: Path, quiet: bool = False) -> None:
    """Train on `train_set` (prepared texts, class indices) and save `model.bin` into `out_dir`."""
    if meta.task == "regression":
        raise UserError(
            "--arch fasttext does binary and multiclass classification; regression needs --arch bert"
        )
    fasttext = _fasttext()
    opts = meta.options
    fd, path = tempfile.mkstemp(prefix=".fasttext-train.", suffix=".txt", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for text, y in zip(train_set.texts, train_set.y):
                f.write(f"__label__{int(y)} {meta.prepare(text)}\n")
        model = fasttext.train_supervised(
            input=path,
            epoch=int(opts["epoch"]),
            lr=float(opts["lr"]),
            dim=int(opts["dim"]),
            wordNgrams=int(opts["word_ngrams"]),
            minCount=int(opts["min_count"]),
            minn=int(opts["minn"]),
            maxn=int(opts["maxn"]),
            thread=int(opts["threads"]),
            seed=int(opts["seed"]),
            loss="softmax",
            verbose=0 if quiet else 1,
        )
    except RuntimeError as e:  # fastText's own errors (NaN, empty vocabulary) are about the data or options
        raise UserError(f"fastText training failed: {e}") from None
    finally:
        os.unlink(path)
    model.save_model(str(out_dir / MODEL_FILE))


class FastTextClassifier(Classifier):
    """Scores a batch with one `predict` call (fastText's multi-line predict in C++)."""

    def __init__(self, meta: Meta, model):
        super().__init__(meta)
        self.model = model
        n = len(meta.labels)
        self._index = {f"__label__{i}": i for i in range(n)}

    def predict(self, texts: list[str]) -> np.ndarray:
        labels, probs = self.model.predict(texts, k=-1, threshold=0.0)
        out = np.zeros((len(texts), len(self.meta.labels)), dtype=np.float64)
        for r, (names, ps) in enumerate(zip(labels, probs)):
            for name, p in zip(names, ps):
                out[r, self._index[name]] = p
        return np.minimum(out, 1.0)  # fastText adds 1e-5 to every probability before normalising


def load(directory: Path, meta: Meta, **_: Any) -> FastTextClassifier:
    fasttext = _fasttext()
    path = directory / MODEL_FILE
    if not path.is_file():
        raise UserError(f"--classifier {directory}: no {MODEL_FILE}")
    try:
        model = fasttext.load_model(str(path))
    except ValueError as e:
        raise UserError(f"{path}: not a fastText model ({e})") from None
    return FastTextClassifier(meta, model)
