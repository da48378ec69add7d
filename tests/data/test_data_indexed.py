"""MMIDIDX interop with megatron-core (both directions, byte for byte) and crash safety of the writer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from data_helpers import MIXED_TEXT, fixture_texts, run_cli, run_tokenize, write_jsonl

from llmctl.core.mmidx import IndexedDataset, IndexedDatasetBuilder

megatron_ds = pytest.importorskip(
    "megatron.core.datasets.indexed_dataset",
    reason="megatron-core (requirements-test.txt) is needed for the parity tests",
)


def _docs(seed: int = 0, n: int = 300, vocab: int = 60000) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=int(rng.integers(0, 40))) for _ in range(n)]


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_builder_writes_the_same_bytes_as_megatron(tmp_path, dtype):
    import torch

    docs = _docs()
    mb = megatron_ds.IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=dtype)
    for d in docs:
        mb.add_document(torch.tensor(d), [len(d)])
    mb.finalize(str(tmp_path / "m.idx"))
    with IndexedDatasetBuilder(tmp_path / "ours", dtype) as b:
        for d in docs[:100]:
            b.add_document(d)
        b.add_documents(np.concatenate(docs[100:]), [len(d) for d in docs[100:]])
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"m{ext}").read_bytes() == (tmp_path / f"ours{ext}").read_bytes()


def test_megatron_multi_sequence_documents_read_by_llmctl(tmp_path):
    import torch

    rng = np.random.default_rng(1)
    mb = megatron_ds.IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=np.int32)
    expected = []
    for _ in range(50):
        for _ in range(int(rng.integers(1, 4))):
            seq = rng.integers(0, 100_000, size=int(rng.integers(1, 20)))
            mb.add_item(torch.tensor(seq))
            expected.append(seq)
        mb.end_document()
    mb.finalize(str(tmp_path / "m.idx"))
    ref = megatron_ds.IndexedDataset(str(tmp_path / "m"))
    ours = IndexedDataset(tmp_path / "m")
    assert ours.dtype == np.int32 and len(ours) == len(expected) == len(ref)
    assert np.array_equal(ours.document_indices, ref.document_indices)
    assert ours.num_documents == 50
    for i, seq in enumerate(expected):
        assert np.array_equal(ours[i], seq)
        assert np.array_equal(ours.get(i, 1, max(0, len(seq) - 2)), ref.get(i, 1, max(0, len(seq) - 2)))
    for a, b in zip(ours[5:9], ref[5:9]):
        assert np.array_equal(a, b)


def test_tokenize_output_is_read_by_megatron(tmp_path, bytelevel_tok):
    from tokenizers import Tokenizer

    texts = MIXED_TEXT + fixture_texts()[:300]
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"text": t, "id": i} for i, t in enumerate(texts)])
    res = run_cli(
        [
            "data",
            "tokenize",
            "--input",
            corpus,
            "--tokenizer-name-or-path",
            bytelevel_tok,
            "--output-prefix",
            tmp_path / "out" / "c",
            "--val-ratio",
            "0.2",
            "--append-eod",
        ]
    )
    assert res.exit_code == 0, res.output
    tok = Tokenizer.from_file(str(bytelevel_tok / "tokenizer.json"))
    eos = tok.token_to_id("</s>")
    expected = [tuple(tok.encode(t, add_special_tokens=False).ids + [eos]) for t in texts]
    got = {}
    for split in ("train", "val"):
        ds = megatron_ds.IndexedDataset(str(tmp_path / "out" / f"c_{split}"))
        assert ds.index.dtype == np.uint16  # vocab 2000 < 65536
        got[split] = [tuple(int(x) for x in ds[i]) for i in range(len(ds))]
        assert list(ds.document_indices) == list(range(len(ds) + 1))
    assert 0 < len(got["val"]) < len(got["train"])
    assert sorted(got["train"] + got["val"]) == sorted(expected)
    for split in ("train", "val"):  # each split keeps the input order
        wanted = set(got[split])
        assert got[split] == [e for e in expected if e in wanted]
    # the in-process run and two worker processes write identical files
    res = run_tokenize(corpus, bytelevel_tok, tmp_path / "w2" / "c", "--val-ratio", "0.2", "--workers", "2")
    assert res.exit_code == 0, res.output
    for name in ("c_train.bin", "c_train.idx", "c_val.bin", "c_val.idx"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()


def test_failed_build_keeps_old_pair_and_leaves_no_temp_files(tmp_path):
    prefix = tmp_path / "d"
    with IndexedDatasetBuilder(prefix, np.uint16) as b:
        b.add_document([1, 2, 3])
    old = {ext: (tmp_path / f"d{ext}").read_bytes() for ext in (".bin", ".idx")}
    with pytest.raises(RuntimeError):
        with IndexedDatasetBuilder(prefix, np.uint16) as b:
            b.add_document([4, 5, 6, 7])
            raise RuntimeError("boom")
    assert {ext: (tmp_path / f"d{ext}").read_bytes() for ext in (".bin", ".idx")} == old
    assert sorted(os.listdir(tmp_path)) == ["d.bin", "d.idx"]
    assert np.array_equal(IndexedDataset(prefix)[0], [1, 2, 3])


def test_tokenize_failing_midway_leaves_no_dataset(tmp_path, bytelevel_tok):
    corpus = tmp_path / "in.jsonl"
    write_jsonl(corpus, [{"text": f"document number {i}"} for i in range(3000)])
    with open(corpus, "ab") as f:
        f.write(b'{"text": "bad \xff byte"}\n')
    res = run_tokenize(corpus, bytelevel_tok, tmp_path / "out" / "c")
    assert res.exit_code == 2
    assert f"{corpus}:3001" in res.output
    out = tmp_path / "out"
    assert not out.exists() or [p.name for p in out.iterdir()] == []


def test_truncated_bin_is_a_user_error(tmp_path):
    from llmctl.core.errors import UserError

    with IndexedDatasetBuilder(tmp_path / "d", np.int32) as b:
        b.add_document(np.arange(100))
    with open(tmp_path / "d.bin", "r+b") as f:
        f.truncate(40)
    with pytest.raises(UserError, match="truncated"):
        IndexedDataset(tmp_path / "d")
    Path(tmp_path / "x.idx").write_bytes(b"not an index at all, clearly")
    Path(tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(UserError, match="MMIDIDX"):
        IndexedDataset(tmp_path / "x")
