"""One reader path: document reading and chunked reading (what tokenize's workers get) number rows the same
way and name a bad row with the identical message, for jsonl, whole-file json (ijson), csv and parquet."""

from __future__ import annotations

import json

import pytest

from llmctl.core.errors import UserError


def _message(fn) -> str:
    with pytest.raises(UserError) as e:
        fn()
    return str(e.value)


def _both(path) -> tuple[str, str]:
    from llmctl.data.pipeline import plan_shard
    from llmctl.data.readers import iter_documents
    from llmctl.data.readers.chunks import decode_chunk, iter_chunks

    plan = plan_shard([str(path)])
    docs = _message(lambda: list(iter_documents(plan)))
    chunks = _message(lambda: [decode_chunk(c) for c in iter_chunks(plan, None, max_docs=2)])
    return docs, chunks


def _parquet(path, table):
    import pyarrow.parquet as pq

    pq.write_table(table, path)
    return path


def _cases(tmp_path):
    import pyarrow as pa

    good = json.dumps({"text": "fine"})
    (tmp_path / "bad_json.jsonl").write_text(f"{good}\n\n{good}\n{{\"text\": \n")
    (tmp_path / "no_key.jsonl").write_text(f"{good}\n{json.dumps({'body': 'x'})}\n")
    (tmp_path / "not_text.jsonl").write_text(f"{good}\n{good}\n{json.dumps({'text': 7})}\n")
    (tmp_path / "not_text.json").write_text(json.dumps([{"text": "a"}, {"text": ["x"]}]))
    (tmp_path / "no_key.json").write_text(json.dumps({"data": [{"text": "a"}, {"title": "b"}]}))
    (tmp_path / "bad.csv").write_bytes(b"id,text\n1,fine\n2,caf\xe9\n")
    _parquet(tmp_path / "not_text.parquet", pa.table({"text": pa.array([b"a", b"b"], pa.binary())}))
    return {
        "bad_json.jsonl": "bad_json.jsonl:4: invalid JSON",
        "no_key.jsonl": "no_key.jsonl:2: no text column 'text' (columns: body)",
        "not_text.jsonl": "not_text.jsonl:3: column 'text' is int, expected text",
        "not_text.json": "not_text.json: item 1: column 'text' is list, expected text",
        "no_key.json": "no_key.json: item 1: no text column 'text' (columns: title)",
        "bad.csv": "bad.csv:3: not UTF-8 (byte 0xe9 at column 6)",
        "not_text.parquet": "not_text.parquet: row 0: column 'text' is bytes, expected text",
    }


def test_bad_rows_read_the_same_in_document_and_chunk_mode(tmp_path):
    for name, expected in _cases(tmp_path).items():
        docs, chunks = _both(tmp_path / name)
        assert docs == chunks, name
        assert docs == f"{tmp_path}/{expected}" or docs.startswith(f"{tmp_path}/{expected}"), (name, docs)


def test_sft_records_name_rows_like_the_document_reader(tmp_path):
    from llmctl.data.pipeline import plan_shard
    from llmctl.data.readers.rows import iter_records

    _cases(tmp_path)
    msg = _message(lambda: list(iter_records(plan_shard([str(tmp_path / "bad_json.jsonl")]))))
    assert msg == _both(tmp_path / "bad_json.jsonl")[0]
    wheres = [w for _p, _r, w, _rec in iter_records(plan_shard([str(tmp_path / "not_text.json")]))]
    assert wheres == [f"{tmp_path}/not_text.json: item 0", f"{tmp_path}/not_text.json: item 1"]
