"""Unit tests of the fitting and packing rules (pure numpy, own tiny data)."""

from __future__ import annotations

import numpy as np
import pytest

from llmctl.data.sft.pack import fit, fit_pair, greedy_knapsack, pack

M = -100


def test_fit_cuts_the_earliest_prompt_tokens_only():
    ids = [1, 2, 3, 4, 5, 6, 7, 8]
    labels = [M, M, M, 4, 5, M, 7, 8]
    assert fit(ids, labels, 8) == (ids, labels, "ok")
    assert fit(ids, labels, 5) == ([4, 5, 6, 7, 8], [4, 5, M, 7, 8], "truncated")
    assert fit(ids, labels, 4) == ([4, 5, 7, 8], [4, 5, 7, 8], "truncated")
    assert fit(ids, labels, 3)[2] == "dropped"  # four trained tokens cannot fit in three


def test_fit_pair_cuts_the_same_prompt_from_both():
    c = ([1, 2, 3, 10, 11], [M, M, M, 10, 11])
    r = ([1, 2, 3, 20, 21, 22], [M, M, M, 20, 21, 22])
    c2, r2, status = fit_pair(c, r, 4)
    assert status == "truncated" and c2 == ([3, 10, 11], [M, 10, 11]) and r2 == ([3, 20, 21, 22], [M, 20, 21, 22])
    assert fit_pair(c, r, 2)[2] == "dropped"


def test_greedy_knapsack_fills_longest_first_and_is_deterministic():
    lengths = [5, 3, 7, 2, 2, 9, 1]
    bins = greedy_knapsack(lengths, 10)
    # 9 then the 1 that fits; 7 then 3; 5 then the two 2s (equal lengths: lower index first)
    assert bins == [[5, 6], [2, 1], [0, 3, 4]]
    assert sorted(k for b in bins for k in b) == list(range(len(lengths)))
    assert all(sum(lengths[k] for k in b) <= 10 for b in bins)
    with pytest.raises(ValueError):
        greedy_knapsack([11], 10)


def test_pack_pads_to_seq_length_with_segment_ids():
    samples = [([1, 2, 3], [M, 2, 3]), ([4, 5], [M, 5])]
    (ids, mask, labels, members), = pack(samples, 8, pad_id=0, neat=True)
    assert members == [0, 1]
    assert ids.tolist() == [1, 2, 3, 4, 5, 0, 0, 0] and ids.dtype == np.int32
    assert mask.tolist() == [1, 1, 1, 2, 2, 0, 0, 0]
    assert labels.tolist() == [M, 2, 3, M, 5, M, M, M]
    (_, mask, _, _), = pack(samples, 8, pad_id=0, neat=False)
    assert mask.tolist() == [1] * 8
