"""Blended GPT dataset: realised proportions, exact resume, packing, epochs, caching and prefix resolution."""

from __future__ import annotations

import numpy as np
import pytest

from llmctl.core.errors import UserError
from llmctl.data.blend import parse_blend, resolve_prefix
from llmctl.data.gpt_dataset import build_gpt_dataset
from llmctl.core.mmidx import IndexedDatasetBuilder

SEQ = 16


def make_source(prefix, source_id: int, docs: int = 200, seed: int = 0) -> list[np.ndarray]:
    """Documents whose tokens say which source they are from (token // 10_000 == source_id)."""
    rng = np.random.default_rng(seed + source_id)
    out = []
    with IndexedDatasetBuilder(prefix, np.uint16) as b:
        for _ in range(docs):
            d = source_id * 10_000 + rng.integers(0, 9_999, size=int(rng.integers(1, 60)))
            b.add_document(d)
            out.append(d)
    return out


@pytest.fixture()
def sources(tmp_path):
    for s, name in enumerate(("zh", "en", "code")):
        for split, n in (("train", 300), ("val", 40)):
            make_source(tmp_path / f"{name}_{split}", s, n, seed=1 if split == "val" else 0)
    return tmp_path


def test_realised_proportions_follow_the_weights(sources):
    spec = f"0.5 {sources}/zh 0.3 {sources}/en 0.2 {sources}/code"
    ds = build_gpt_dataset(spec, seq_len=SEQ, num_samples=10_000, seed=3)
    assert len(ds) == 10_000 and ds.source_names == [f"{sources}/zh", f"{sources}/en", f"{sources}/code"]
    src = np.array([ds[i]["source"] for i in range(len(ds))])
    shares = np.bincount(src, minlength=3) / len(ds)
    assert np.all(np.abs(shares - [0.5, 0.3, 0.2]) < 0.02)
    for i in range(0, 10_000, 97):  # each sample's tokens come from the source it is tagged with
        item = ds[i]
        assert item["tokens"].dtype == np.int64 and item["tokens"].shape == (SEQ + 1,)
        assert set((item["tokens"] // 10_000).tolist()) == {item["source"]}


def test_resume_from_offset_gives_the_uninterrupted_samples(sources):
    spec = [f"{sources}/zh", f"{sources}/en"]
    run = build_gpt_dataset(spec, seq_len=SEQ, num_samples=2_000, seed=11)
    uninterrupted = [s["tokens"] for s in run.iter_from(0)]
    k = 1_234
    resumed = build_gpt_dataset(spec, seq_len=SEQ, num_samples=2_000, seed=11)  # a new process would do this
    got = [s["tokens"] for s in resumed.iter_from(k)]
    assert len(got) == 2_000 - k
    assert all(np.array_equal(a, b) for a, b in zip(got, uninterrupted[k:]))
    other = build_gpt_dataset(spec, seq_len=SEQ, num_samples=2_000, seed=12)
    assert not all(np.array_equal(other[i]["tokens"], uninterrupted[i]) for i in range(50))


def test_samples_pack_the_shuffled_token_stream_over_several_epochs(tmp_path):
    docs = make_source(tmp_path / "one", 1, docs=30)
    tokens = sum(len(d) for d in docs)
    n = (3 * tokens) // SEQ  # about three epochs
    ds = build_gpt_dataset(str(tmp_path / "one"), seq_len=SEQ, num_samples=n, seed=5)
    inner = ds.datasets[0]
    assert inner.num_epochs >= 3
    assert np.array_equal(np.bincount(inner.doc_idx, minlength=30), np.full(30, inner.num_epochs))
    stream = np.concatenate([docs[d] for d in inner.doc_idx])
    by_position = np.empty(n, dtype=np.int64)
    by_position[np.asarray(inner.shuffle_idx)] = np.arange(n)  # sample index -> stream position
    for j in range(n):
        assert np.array_equal(ds[int(by_position[j])]["tokens"], stream[j * SEQ : j * SEQ + SEQ + 1])


def test_num_samples_none_is_one_epoch_without_repeats(tmp_path):
    docs = make_source(tmp_path / "one", 0, docs=50)
    tokens = sum(len(d) for d in docs)
    ds = build_gpt_dataset(str(tmp_path / "one"), seq_len=SEQ, num_samples=None, seed=2)
    assert len(ds) == (tokens - 1) // SEQ and ds.datasets[0].num_epochs == 1
    make_source(tmp_path / "two", 1, docs=10)
    blend = build_gpt_dataset(f"0.5 {tmp_path}/one 0.5 {tmp_path}/two", seq_len=SEQ, num_samples=None)
    assert all(d.num_epochs == 1 for d in blend.datasets)  # the small source bounds the blend


def test_indices_are_cached_next_to_the_data_and_reused(tmp_path):
    make_source(tmp_path / "c_train", 0)
    ds = build_gpt_dataset(str(tmp_path / "c"), seq_len=SEQ, num_samples=500, seed=1)
    cache = sorted((tmp_path / "llmctl_index_cache").glob("*.npy"))
    assert len(cache) == 4 and all(p.name.startswith("c_train.") for p in cache)  # 3 indices + doc groups
    stamps = [p.stat().st_mtime_ns for p in cache]
    again = build_gpt_dataset(str(tmp_path / "c"), seq_len=SEQ, num_samples=500, seed=1)
    assert [p.stat().st_mtime_ns for p in cache] == stamps
    assert np.array_equal(again[7]["tokens"], ds[7]["tokens"])
    build_gpt_dataset(str(tmp_path / "c"), seq_len=SEQ, num_samples=500, seed=2)
    assert len(list((tmp_path / "llmctl_index_cache").glob("*.npy"))) == 7  # the doc groups are the data's


def _copy_gaps(ds, seq=SEQ) -> tuple[int, float]:
    """(smallest token distance between two copies of a document, the ideal) from `repeat_distances`."""
    from llmctl.data.repeats import repeat_distances

    src = repeat_distances(ds)["sources"][0]
    return src["min_distance_tokens"], src["ideal_distance_tokens"]


def test_epoch_repeats_are_spread_apart(tmp_path):
    docs = make_source(tmp_path / "one", 1, docs=200)
    tokens = sum(len(d) for d in docs)
    ds = build_gpt_dataset(str(tmp_path / "one"), seq_len=SEQ, num_samples=int(2.5 * tokens) // SEQ, seed=4)
    inner = ds.datasets[0]
    assert inner.num_epochs == 3
    assert np.array_equal(np.bincount(inner.doc_idx, minlength=200), np.full(200, 3))
    gap, ideal = _copy_gaps(ds)
    assert ideal == tokens and gap >= 0.5 * ideal, (gap, ideal)
    # the check can fail: Megatron's order (a permutation per epoch, all samples shuffled) puts copies close
    rng = np.random.default_rng(0)
    inner.doc_idx = np.concatenate([rng.permutation(200) for _ in range(3)])
    inner.shuffle_idx = rng.permutation(inner.num_samples)
    assert _copy_gaps(ds)[0] < 0.05 * ideal


def test_identical_documents_inside_an_epoch_are_spread_apart(tmp_path):
    rng = np.random.default_rng(1)
    dup = rng.integers(0, 9_999, size=30)
    with IndexedDatasetBuilder(tmp_path / "d", np.uint16) as b:
        for i in range(200):  # four copies of one document, stored next to each other
            b.add_document(dup if 100 <= i < 104 else rng.integers(0, 9_999, size=int(rng.integers(5, 60))))
    ds = build_gpt_dataset(str(tmp_path / "d"), seq_len=SEQ, num_samples=None, seed=3)
    assert ds.datasets[0].num_epochs == 1
    gap, ideal = _copy_gaps(ds)
    assert gap >= 0.5 * ideal, (gap, ideal)


def test_train_and_val_prefix_resolution(sources, tmp_path):
    base = str(sources / "zh")
    assert resolve_prefix(base, "train") == base + "_train"
    assert resolve_prefix(base, "val") == base + "_val"
    assert resolve_prefix(base + "_train", "val") == base + "_val"
    assert resolve_prefix(base + "_train", "train") == base + "_train"  # exists as-is
    make_source(tmp_path / "plain", 0, 20)
    assert resolve_prefix(str(tmp_path / "plain"), "train") == str(tmp_path / "plain")
    assert resolve_prefix(str(tmp_path / "plain"), "val") == str(tmp_path / "plain")  # a dedicated val prefix
    make_source(tmp_path / "only_train", 0, 20)
    with pytest.raises(UserError, match="no validation split"):
        resolve_prefix(str(tmp_path / "only") + "_train", "val")
    with pytest.raises(UserError, match="neither"):
        resolve_prefix(str(tmp_path / "missing"), "train")
    val = build_gpt_dataset(
        f"0.5 {sources}/zh_train 0.5 {sources}/en", seq_len=SEQ, num_samples=100, split="val"
    )
    assert val.datasets[0].prefix.endswith("zh_val") and val.datasets[1].prefix.endswith("en_val")


def test_blend_spec_forms(tmp_path, sources):
    a, b = f"{sources}/zh", f"{sources}/en"
    assert parse_blend(f"0.7 {a} 0.3 {b}") == [(a, 0.7), (b, 0.3)]
    assert parse_blend(["0.7", a, "0.3", b]) == [(a, 0.7), (b, 0.3)]
    assert parse_blend([(a, 0.7), (b, 0.3)]) == [(a, 0.7), (b, 0.3)]
    assert parse_blend({a: 0.7, b: 0.3}) == [(a, 0.7), (b, 0.3)]
    assert parse_blend(f"{a},{b}") == [(a, None), (b, None)]
    (tmp_path / "blend.yaml").write_text(
        f"blend:\n  - {{prefix: {a}, weight: 0.7}}\n  - {{prefix: {b}, weight: 0.3}}\n"
    )
    assert parse_blend(str(tmp_path / "blend.yaml")) == [(a, 0.7), (b, 0.3)]
    with pytest.raises(UserError, match="alternates weight and prefix"):
        parse_blend(f"0.7 {a} {b}")
    # without weights, sources mix in proportion to their tokens
    ds = build_gpt_dataset([a, b], seq_len=SEQ, num_samples=4_000)
    sizes = np.array([d.tokens_per_epoch for d in ds.datasets], dtype=float)
    assert np.allclose(ds.weights, sizes / sizes.sum())


def test_registered_as_the_gpt_dataset():
    from llmctl.core.plugins import lookup

    assert lookup("datasets", "gpt") is build_gpt_dataset
