"""train-classifier: fastText and BERT scorers on real prose vs test-built spam, a 3-domain classifier,
regression, labels from sources; metrics checked against scikit-learn, saved models against fastText and
transformers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from data_helpers import read_jsonl, write_jsonl
from quality_helpers import prose_texts, spam_texts

from llmctl.data.classifiers.labelled import read_labelled
from llmctl.data.classifiers.meta import load_classifier, read_meta
from llmctl.data.classifiers.metrics import best_f1_threshold, classification_metrics, per_label, roc_auc
from llmctl.data.classifiers.train import train_classifier

sklearn_metrics = pytest.importorskip("sklearn.metrics")

BERT_TINY = {
    "layers": 2,
    "hidden": 64,
    "heads": 2,
    "max_length": 64,
    "vocab_size": 2000,
    "epoch": 3,
    "threads": 1,
}


def held_out(labelled, label_key="label"):
    """The validation rows train-classifier held out (same split: seed 0, 10% per class)."""
    return read_labelled([str(labelled)], label_key=label_key).split(0.1)[1]


def scores_of(clf_dir, val):
    clf = load_classifier(clf_dir)
    return clf, clf.predict([clf.meta.prepare(t) for t in val.texts])


def test_fasttext_scorer_separates_prose_from_spam(fasttext_quality, quality_set):
    import fasttext

    meta = read_meta(fasttext_quality)
    assert meta.arch == "fasttext" and meta.task == "binary" and meta.positive == "1"
    assert meta.metrics["auc"] >= 0.9 and meta.metrics["accuracy"] >= 0.9
    val = held_out(quality_set)
    clf, probs = scores_of(fasttext_quality, val)
    pos = val.y == 1
    assert meta.metrics["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(pos, probs[:, 1]), abs=1e-12)
    pred = (probs[:, 1] >= 0.5).astype(int)
    f1 = sklearn_metrics.f1_score(val.y, pred, average=None)
    assert [meta.metrics["per_label"][k]["f1"] for k in ("0", "1")] == pytest.approx(list(f1), abs=1e-12)
    # the saved model.bin is fastText's own: the plain bindings give the same probabilities
    plain = fasttext.load_model(str(fasttext_quality / "model.bin"))
    labels, p = plain.predict(meta.prepare(val.texts[0]), k=2)
    assert dict(zip(labels, p))["__label__1"] == pytest.approx(probs[0, 1], abs=1e-6)


def test_bert_scorer_separates_prose_from_spam_and_loads_in_transformers(tmp_path, quality_set):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "bert"
    meta = train_classifier([str(quality_set)], out, arch="bert", options=BERT_TINY, quiet=True)
    assert meta.metrics["auc"] >= 0.9, meta.metrics
    val = held_out(quality_set)
    clf, probs = scores_of(out, val)
    assert meta.metrics["auc"] == pytest.approx(
        sklearn_metrics.roc_auc_score(val.y == 1, probs[:, 1]), abs=1e-12
    )
    model = AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert model.config.id2label == {0: "0", 1: "1"} and model.config.num_hidden_layers == 2
    with torch.inference_mode():  # one text at a time, no padding: what the length-sorted batches must equal
        for i in range(0, len(val.texts), 9):
            enc = tok(meta.prepare(val.texts[i]), truncation=True, max_length=64, return_tensors="pt")
            ref = torch.softmax(model(**enc).logits, -1)[0].numpy()
            assert np.allclose(ref, probs[i], atol=1e-5)


def test_domain_classifier_is_clearly_above_chance(fasttext_domain, domain_set):
    meta = read_meta(fasttext_domain)
    assert meta.task == "multiclass" and meta.labels == ["code", "math", "prose"] and meta.column == "domain"
    m = meta.metrics
    assert m["accuracy"] >= 0.8  # chance is 1/3
    assert all(v["f1"] >= 0.6 for v in m["per_label"].values()), m["per_label"]
    val = held_out(domain_set, "domain")
    _clf, probs = scores_of(fasttext_domain, val)
    pred = probs.argmax(1)
    assert m["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(val.y, pred))
    assert m["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(val.y, pred, average="macro"))


def test_bert_regression_reports_mse(tmp_path, real_fixtures):
    pytest.importorskip("torch")
    rows = [{"text": t, "grade": 2.5 + 0.1 * (i % 5)} for i, t in enumerate(prose_texts(120))]
    rows += [{"text": t, "grade": 0.1 * (i % 5)} for i, t in enumerate(spam_texts(120))]
    data = write_jsonl(tmp_path / "graded.jsonl", rows)
    meta = train_classifier(
        [str(data)],
        tmp_path / "reg",
        arch="bert",
        label_key="grade",
        options={**BERT_TINY, "epoch": 2},
        quiet=True,
    )
    assert meta.task == "regression" and meta.column == "quality_score" and meta.label_range == [0.0, 2.9]
    val = read_labelled([str(data)], label_key="grade").split(0.1)[1]
    _clf, pred = scores_of(tmp_path / "reg", val)
    assert pred.shape == (len(val.texts),)
    assert meta.metrics["mse"] == pytest.approx(sklearn_metrics.mean_squared_error(val.y, pred), rel=1e-9)


def test_labels_from_source(cli, tmp_path, real_fixtures):
    pytest.importorskip("fasttext")
    good = write_jsonl(tmp_path / "good.jsonl", [{"content": t} for t in prose_texts(300)])
    spam = write_jsonl(tmp_path / "web.jsonl", [{"content": t} for t in spam_texts(300)])
    code, out, err = cli(
        "data",
        "train-classifier",
        "--labels-from-source",
        "--input",
        f"{good}=hq",
        "--input",
        f"{spam}=lq",
        "--positive",
        "hq",
        "--output-dir",
        tmp_path / "clf",
    )
    assert code == 0, err
    assert "binary classifier (hq, lq) trained on 540 rows" in out and "AUC" in out
    meta = read_meta(tmp_path / "clf")
    assert meta.positive == "hq" and meta.trained_on["rows_per_file"] == {str(good): 300, str(spam): 300}
    assert meta.metrics["auc"] >= 0.9


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 500)
    scores = np.round(rng.random(500) + 0.3 * (y == 1), 2)  # ties on purpose
    assert roc_auc(y == 1, scores) == pytest.approx(sklearn_metrics.roc_auc_score(y == 1, scores), abs=1e-12)
    pred = rng.integers(0, 3, 500)
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(y, pred, zero_division=0)
    table = per_label(y, pred, ["a", "b", "c"])
    assert [table[k]["f1"] for k in "abc"] == pytest.approx(list(f))
    assert [table[k]["precision"] for k in "abc"] == pytest.approx(list(p))
    t = best_f1_threshold(y == 1, scores)
    best = max(sklearn_metrics.f1_score(y == 1, scores >= c) for c in np.unique(scores))
    assert sklearn_metrics.f1_score(y == 1, scores >= t) == pytest.approx(best)
    probs = rng.dirichlet(np.ones(3), 500)
    m = classification_metrics(y, probs, ["a", "b", "c"], "multiclass")
    assert m["per_label"]["b"]["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y == 1, probs[:, 1]))


@pytest.mark.parametrize(
    "case", ["one_class", "no_label_key", "unknown_arch", "string_labels", "ft_regression"]
)
def test_bad_labelled_input_is_one_line_and_writes_nothing(cli, tmp_path, case):
    rows = [
        {
            "text": f"document number {i} about things",
            "label": 1 if case != "one_class" else 0,
            "grade": i / 7,
            "kind": "good" if i % 2 else "bad",
        }
        for i in range(40)
    ]
    if case == "no_label_key":
        del rows[7]["label"]
    data = write_jsonl(tmp_path / "l.jsonl", rows)
    args = {
        "one_class": [],
        "no_label_key": [],
        "unknown_arch": ["--arch", "xgboost"],
        "string_labels": ["--label-key", "kind"],
        "ft_regression": ["--label-key", "grade"],
    }[case]
    code, _out, err = cli(
        "data", "train-classifier", "--input", data, "--output-dir", tmp_path / "clf", *args
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert {
        "one_class": "only one class ('0')",
        "no_label_key": f"{data}:8: no label column 'label'",
        "unknown_arch": "--arch xgboost: unknown classifier architecture; available: bert, fasttext",
        "string_labels": "pass --positive",
        "ft_regression": "regression needs --arch bert",
    }[case] in err
    assert not (tmp_path / "clf").exists() and [p.name for p in tmp_path.iterdir()] == ["l.jsonl"]


def test_classifier_dir_from_another_version_is_refused(cli, tmp_path, fasttext_quality):
    old = tmp_path / "old_clf"
    shutil.copytree(fasttext_quality, old)
    meta = json.loads((old / "llmctl_classifier.json").read_text())
    (old / "llmctl_classifier.json").write_text(json.dumps({**meta, "llmctl_classifier": 0}))
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": "some text"}])
    code, _out, err = cli(
        "data", "classify", "--input", corpus, "--classifier", old, "--output", tmp_path / "out"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "classifier format version 0, this llmctl reads version 1" in err
    assert not (tmp_path / "out").exists()
    assert read_jsonl(corpus) == [{"text": "some text"}]


def test_classifier_backends_come_from_the_plugin_bus():
    """fasttext and bert are registered through `register_classifiers` like a third party's backend; one that
    a plugin registers is what `--arch NAME` and a saved classifier's arch resolve to."""
    import types

    from llmctl.core.errors import UserError
    from llmctl.core.plugins import get_bus, hookimpl
    from llmctl.data.classifiers.meta import archs, backend

    assert {"fasttext", "bert"} <= set(archs())
    assert get_bus().registry("classifiers")["fasttext"].plugin == "data"
    toy = types.SimpleNamespace(train=lambda *a, **k: None, load=lambda *a, **k: None)

    class _Plugin:
        @hookimpl
        def register_classifiers(self, register):
            register("toy-backend", toy)

    bus = get_bus()
    bus.register_plugin(_Plugin(), "test-toy-classifier")
    try:
        assert backend("toy-backend") is toy
    finally:
        bus.pm.unregister(name="test-toy-classifier")
        bus._registries.clear()
    with pytest.raises(UserError, match="unknown classifier architecture; available: bert, fasttext"):
        backend("toy-backend")
