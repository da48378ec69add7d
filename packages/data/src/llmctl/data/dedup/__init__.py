"""Exact and MinHash-LSH near-duplicate removal across shards, in three steps on one executor.

1. signatures (`signatures.py`, per shard): normalised exact hashes, MinHash signatures, LSH band columns;
2. join (`join.py`, once): global exact and band joins in bounded memory, verified by estimated Jaccard,
   greedy removal in document order (or, `verify=False`, unverified clusters keeping their smallest document),
   per-shard removal lists and `_pairs.jsonl`;
3. apply (`apply.py`, per shard): copy every document not on its shard's removal list.
"""

from .apply import ApplyStage, default_work_dir, run_dedup
from .join import JoinStage, cluster_removal, dedup_join, greedy_removal
from .params import DedupParams, normalized_hash
from .signatures import SignatureStage

__all__ = [
    "ApplyStage",
    "DedupParams",
    "JoinStage",
    "SignatureStage",
    "cluster_removal",
    "dedup_join",
    "default_work_dir",
    "greedy_removal",
    "normalized_hash",
    "run_dedup",
]
