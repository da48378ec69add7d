"""What pipeline stages are handed besides the tokens: each micro-batch's positions and document ids, split by
torch's schedule as the tokens are. A micro-batch without documents (rows of one segment each) is one document
per row, so a step mixing both still gives every stage inputs of one shape."""

from __future__ import annotations

import pytest
import torch

from llmctl.core.nn.model import Documents
from llmctl.parallel.pipeline import stage_inputs


def test_positions_and_document_ids_of_every_micro_batch():
    neat = {"input_ids": torch.zeros(2, 6, dtype=torch.long), "documents": Documents([2, 4, 6]),
            "positions": torch.tensor([[0, 1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]])}
    plain = {"input_ids": torch.zeros(2, 6, dtype=torch.long)}
    got = stage_inputs([neat, plain])
    assert got["positions"].tolist() == neat["positions"].tolist() + [list(range(6))] * 2
    assert got["segments"].tolist() == [[0, 0, 1, 1, 1, 1], [2] * 6, [0] * 6, [1] * 6]
    # the stage recovers the documents from the ids of its micro-batch
    _, lengths = torch.unique_consecutive(got["segments"][:2].reshape(-1), return_counts=True)
    assert lengths.tolist() == [2, 4, 6]
    assert stage_inputs([plain, plain]) == {}  # no documents anywhere: the stages' plain forward


def test_a_document_crossing_a_row_is_refused():
    batch = {"input_ids": torch.zeros(2, 6, dtype=torch.long), "documents": Documents([4, 8]),
             "positions": torch.zeros(2, 6, dtype=torch.long)}
    with pytest.raises(ValueError, match="must fill rows of 6 tokens"):
        stage_inputs([batch])
