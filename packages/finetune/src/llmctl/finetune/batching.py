"""How finetuning samples become a micro-batch, in one of two layouts.

Padding-free (the default): the micro-batch's samples laid end to end in one row [1, N], each a document of
its own (`model(..., documents=)`: attention stays inside a sample, positions restart at 0), so every token
computed is a real one — MindSpeed's `--variable-seq-lengths` pads each micro-batch to its longest sample,
and the linear layers (most of the work) then run on the padding too. The loss is the same: each sample is
shifted by one within itself, the loss is summed over trained tokens. `loss_at` lists those trained
positions, so the LM head skips the prompt tokens as well.

Padded: rows [B, L], right padding with -100 labels (under a causal mask padding never reaches a real
token). Used where a layout needs rows (context parallelism splits each row's sequence into chunks;
pipeline stages exchange activations of one shape, so there every row is data.seq_length long), or with
`task.padding_free: false`.

A sample's `attention_mask` may hold neat-pack segment ids 1, 2, 3, ... (`llmctl data sft --neat-pack`):
each segment is a document (under context or pipeline parallelism inside the sample's own row,
`document_rows`). A plain `--pack` row (mask all 1) is one document: attention crosses its samples, as in
MindSpeed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from llmctl.core.errors import UserError
from llmctl.core.nn.model import Documents

IGNORE = -100
MODEL_INPUTS = ("positions", "documents", "loss_at")  # batch keys that `model(tokens, labels, **...)` takes


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The forward keywords a batch carries besides tokens and labels."""
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


def sample_documents(sample: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input_ids, labels) of each document in a stored sample: runs of one nonzero attention_mask value
    (an unpacked sample or a `--pack` row is one; a `--neat-pack` row one per segment; mask 0 is padding)."""
    ids, labels = np.asarray(sample["input_ids"]), np.asarray(sample["labels"])
    mask = sample.get("attention_mask")
    if mask is None:
        return [(ids, labels)]
    mask = np.asarray(mask)
    edges = np.flatnonzero(np.diff(mask)) + 1
    starts, ends = np.concatenate(([0], edges)), np.concatenate((edges, [len(mask)]))
    return [(ids[a:b], labels[a:b]) for a, b in zip(starts, ends) if mask[a] != 0]


def has_segments(sample: dict[str, Any]) -> bool:
    mask = sample.get("attention_mask")
    return mask is not None and int(np.max(mask, initial=0)) > 1


@dataclasses.dataclass
class Piece:
    """One document of a padding-free row, already shifted: `inputs[j]` predicts `targets[j]`."""

    inputs: np.ndarray
    targets: np.ndarray
    owner: int = -1  # the sample or answer its loss belongs to (-1: none, e.g. a shared prompt)
    start: int = 0  # the position of its first token
    prefix: int = -1  # the index of an earlier piece it continues (attends to all of it first)


def shifted(ids: np.ndarray, labels: np.ndarray, owner: int = -1) -> Piece:
    return Piece(np.asarray(ids)[:-1], np.asarray(labels)[1:], owner)


def pair_pieces(chosen: tuple[np.ndarray, np.ndarray], rejected: tuple[np.ndarray, np.ndarray],
                owners: tuple[int, int], first: int) -> list[Piece]:
    """A preference pair as one shared prompt and two answers continuing it (`first`: the index the prompt
    piece gets in the row). The prompt is the pair's common leading tokens up to the first trained label
    (its own targets are all -100), less its last token, which each answer's piece starts with: that
    position predicts the answer's first token, which differs between the two. Nothing to share: two
    plain pieces."""
    (c_ids, c_lab), (r_ids, r_lab) = (tuple(map(np.asarray, x)) for x in (chosen, rejected))
    n = min(len(c_ids), len(r_ids))
    common = int(np.argmin(c_ids[:n] == r_ids[:n])) if not (c_ids[:n] == r_ids[:n]).all() else n
    shared = min(common, _first_trained(c_lab), _first_trained(r_lab)) - 1  # the prompt piece's length
    if shared < 1:
        return [shifted(c_ids, c_lab, owners[0]), shifted(r_ids, r_lab, owners[1])]
    return [Piece(c_ids[:shared], c_lab[1:shared + 1]),
            Piece(c_ids[shared:-1], c_lab[shared + 1:], owners[0], start=shared, prefix=first),
            Piece(r_ids[shared:-1], r_lab[shared + 1:], owners[1], start=shared, prefix=first)]


def _first_trained(labels: np.ndarray) -> int:
    trained = np.flatnonzero(labels != IGNORE)
    return int(trained[0]) if len(trained) else len(labels)


def documents_batch(pieces: list[Piece], pad_id: int, multiple: int = 1, owners: int = 0) -> dict[str, Any]:
    """One row holding `pieces` end to end: input_ids / labels / positions [1, N], `documents` (their
    lengths and prefixes), `loss_at` (trained positions) and `document_index` [N] (each token's owner in
    0..owners-1; `owners` for tokens of no owner and the padding). N is rounded up to `multiple` with a last,
    untrained padding document (tensor parallelism shards the sequence, GPUs like aligned sizes). An empty
    piece (a one-token sample predicts nothing) takes no place."""
    keep = [i for i, p in enumerate(pieces) if len(p.inputs)]
    index = {old: new for new, old in enumerate(keep)}
    pieces = [pieces[i] for i in keep]
    n = sum(len(p.inputs) for p in pieces)
    pad = -n % multiple if n else multiple
    if pad:
        pieces.append(Piece(np.full(pad, pad_id), np.full(pad, IGNORE)))
    labels = torch.from_numpy(np.concatenate([p.targets for p in pieces]).astype(np.int64))[None]
    lengths = torch.tensor([len(p.inputs) for p in pieces])
    owner = torch.tensor([p.owner if p.owner >= 0 else owners for p in pieces])
    return {
        "input_ids": torch.from_numpy(np.concatenate([p.inputs for p in pieces]).astype(np.int64))[None],
        "labels": labels,
        "positions": torch.cat([torch.arange(p.start, p.start + len(p.inputs)) for p in pieces])[None],
        "documents": Documents(lengths.tolist(), [index.get(p.prefix, -1) for p in pieces]),
        "loss_at": (labels[0] != IGNORE).nonzero().squeeze(1),
        "document_index": torch.repeat_interleave(owner, lengths),
        "num_tokens": n,
    }


def document_rows(rows: list[list[Piece]], pad_id: int, length: int) -> dict[str, Any]:
    """Rows [B, length], each holding its own pieces end to end and padded at its end (`documents_batch` per
    row): the one shape pipeline stages exchange, and rows context parallelism can cut into chunks, with each
    neat-packed sample still attending only to itself. The batch's `documents` run row after row."""
    for pieces in rows:
        if (n := sum(len(p.inputs) for p in pieces)) > length:
            raise UserError(f"a neat-packed row holds {n} input tokens, more than data.seq_length {length}, "
                            f"the row of context/pipeline parallelism; preprocess with --seq-length {length}")
    parts = [documents_batch(pieces, pad_id, multiple=length) for pieces in rows]
    return {
        "input_ids": torch.cat([p["input_ids"] for p in parts]),
        "labels": torch.cat([p["labels"] for p in parts]),
        "positions": torch.cat([p["positions"] for p in parts]),
        "documents": Documents([n for p in parts for n in p["documents"]]),
        "num_tokens": sum(p["num_tokens"] for p in parts),
    }


def padded_batch(rows: list[tuple[np.ndarray, np.ndarray]], pad_id: int, length: int) -> dict[str, torch.Tensor]:
    """input_ids / labels [B, length - 1] (labels shifted by one), right-padded. `num_tokens` counts the
    inputs that predict a sample's next token (the tokens its padding-free row would hold)."""
    ids = pad_rows([r[0] for r in rows], length, pad_id)
    labels = pad_rows([r[1] for r in rows], length, IGNORE)
    real = sum(max(min(len(r[0]), length) - 1, 0) for r in rows)
    return {"input_ids": ids[:, :-1], "labels": labels[:, 1:].clone(), "num_tokens": real}


def pad_rows(rows: list[np.ndarray], length: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r[:length], dtype=torch.long)
    return out


def padded_length(longest: int, multiple: int) -> int:
    return -(-longest // multiple) * multiple


def padded_row_length(longest: int, seq: int, multiple: int, parallel: Any, variable: bool = True) -> int:
    """The length (before the shift) of a padded micro-batch's rows, from its longest sample: data.seq_length
    + 1 under pipeline parallelism (inputs of exactly seq_length tokens); else the longest rounded up to
    `multiple` (MindSpeed's --variable-seq-lengths), or data.seq_length with `variable` false."""
    if fixed_rows(parallel):
        if longest > seq + 1:
            raise UserError(f"a sample of {longest} tokens is longer than data.seq_length {seq} + 1, the fixed "
                            f"row of pipeline parallelism; preprocess with --seq-length {seq}")
        return seq + 1
    if variable:
        return min(max(padded_length(longest - 1, multiple) + 1, longest), max(seq, longest))
    return max(seq, longest)


def degree(parallel: Any, key: str) -> int:
    """The size of one parallel dimension (tp, pp, cp) in the config's `parallel:` section (unset = 1)."""
    return int(parallel.get(key, 1) or 1)


def needs_rows(parallel: Any) -> list[str]:
    """The layout dimensions that need rows rather than one padding-free row: context parallelism splits each
    row's sequence into chunks, and pipeline stages exchange activations of one fixed shape."""
    return [f"parallel.{k} {degree(parallel, k)}" for k in ("cp", "pp") if degree(parallel, k) > 1]


def use_padding_free(setting: bool | None, parallel: Any) -> bool:
    """`task.padding_free` (None = on unless the layout needs rows) against the parallel layout."""
    rows = needs_rows(parallel)
    if setting is None:
        return not rows
    if setting and rows:
        raise UserError(f"task.padding_free: {rows[0]} needs padded rows; set task.padding_free false")
    return bool(setting)


def fixed_rows(parallel: Any) -> bool:
    """Pipeline stages send activations of the one shape they were built for: [micro-batch, seq_length]."""
    return degree(parallel, "pp") > 1


def sequence_multiple(pad_to_multiple_of: int, parallel: Any) -> int:
    """What a padding-free row's length is rounded to: the option, and the TP degree (sequence parallelism
    shards the sequence over the TP ranks)."""
    return math.lcm(pad_to_multiple_of, degree(parallel, "tp"))
