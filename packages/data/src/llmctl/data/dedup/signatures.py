"""Dedup phase 1, per shard: exact hashes, MinHash signatures and LSH band columns, streamed to the work dir."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.core.io import write_json_atomic

from ..executors import ShardDocuments, ShardStage
from ..pipeline import make_bar, nbytes, report_progress, shard_tag
from ..text import detect_langs
from .minhash import MinHasher, band_hashes
from .params import BATCH_DOCS, LANG_CODES, DedupParams, band_path, normalized_hash, work_paths


class SignatureStage(ShardStage):
    """Phase 1: the arrays the join needs, one raw file each (bounded memory: batches are appended)."""

    name = "dedup-signatures"

    def __init__(self, work: Path, params: DedupParams, text_key: str | None = None):
        self.work, self.params, self.text_key = Path(work), params.resolved(), text_key
        self.marker_dir = self.work / "_done"

    def fingerprint(self) -> dict[str, Any]:
        return {"params": self.params.signature_dict(), "text_key": self.text_key}

    def run(self, documents: ShardDocuments, shard: int, num_shards: int) -> dict[str, Any]:
        params, work = self.params, self.work
        work.mkdir(parents=True, exist_ok=True)
        tag = shard_tag(shard, num_shards)
        paths = work_paths(work, tag)
        paths["meta"].unlink(missing_ok=True)
        outputs = {k: paths[k] for k in ("sig", "exact", "loc", "lang", "size")}
        outputs.update({f"band{j}": band_path(work, tag, j) for j in range(params.bands if params.minhash else 0)})
        hasher = MinHasher(params.num_perm, params.ngram, params.seed)
        file_ids = {f: i for i, f in enumerate(documents.files)}
        bar = make_bar(self.quiet, desc=f"dedup signatures {shard}/{num_shards}", unit="docs")
        outs = {k: open(str(p) + ".tmp", "wb") for k, p in outputs.items()}
        n = 0
        try:
            batch: list = []

            def flush() -> None:
                nonlocal n
                texts = [d.text for d in batch]
                if params.minhash:
                    sig = hasher.signatures(texts)
                    outs["sig"].write(sig.tobytes())
                    bands = band_hashes(sig, params.bands, params.rows)
                    for j in range(params.bands):
                        outs[f"band{j}"].write(np.ascontiguousarray(bands[:, j]).tobytes())
                if params.exact:
                    outs["exact"].write(
                        np.fromiter((normalized_hash(t) for t in texts), np.uint64, len(texts)).tobytes()
                    )
                loc = np.array([[file_ids[d.source], d.index] for d in batch], dtype=np.int64).reshape(-1, 2)
                outs["loc"].write(loc.tobytes())
                langs = [d.lang or guess for d, guess in zip(batch, detect_langs(texts))]
                outs["lang"].write(np.array([LANG_CODES.get(x, 0) for x in langs], np.uint8).tobytes())
                outs["size"].write(np.array([nbytes(t) for t in texts], np.int64).tobytes())
                n += len(batch)
                bar.update(len(batch))
                report_progress(len(batch))
                batch.clear()

            for doc in documents:
                batch.append(doc)
                if len(batch) >= BATCH_DOCS:
                    flush()
            if batch:
                flush()
            for k, f in outs.items():
                f.close()
                os.replace(str(outputs[k]) + ".tmp", outputs[k])
        except BaseException:
            for k, f in outs.items():
                f.close()
                Path(str(outputs[k]) + ".tmp").unlink(missing_ok=True)
            raise
        finally:
            bar.close()
        meta = {
            "shard": [shard, num_shards],
            "docs": n,
            "files": list(documents.files),
            "by_document": documents.plan.by_document,
            "params": params.signature_dict(),
            "skipped": documents.stats.to_dict()["dropped"],
        }
        write_json_atomic(paths["meta"], meta)
        return meta

    def merge(self, reports: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        return {"docs": sum(r["docs"] for r in reports), "shards": [r["shard"] for r in reports]}
