"""How a model's layers split over pipeline stages: MindSpeed's `--num-layer-list` ("5,7") parsed and checked in
one place, for the pipeline-parallel layout (llmctl-parallel) and for megatron-core checkpoint shards. Torch-free."""

from __future__ import annotations

from typing import Any

from .errors import UserError


def parse_layer_list(value: Any) -> list[int] | None:
    """"5,7", "5 7" or [5, 7] -> [5, 7]; None, "" or [] -> None."""
    if value is None or value == "" or value == []:
        return None
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    try:
        return [int(str(x).strip()) for x in items]
    except ValueError:
        raise UserError(f"--num-layer-list {value!r}: expected comma-separated layer counts, e.g. 5,7") from None


def stage_layer_counts(num_layers: int, pp: int, num_layer_list: Any = None, *,
                       uneven_default: bool = False) -> list[int]:
    """Layers per stage: `num_layer_list` when given (one count per stage, summing to the layers, each >= 1),
    else an even split. Megatron requires the even split to be exact; `uneven_default` gives the first stages
    one layer more instead (what training accepts without a list)."""
    if pp > num_layers:
        raise UserError(f"pipeline size {pp} (parallel.pp) is larger than model.num_layers {num_layers}: every stage "
                        "needs at least one layer")
    counts = parse_layer_list(num_layer_list)
    if counts is None:
        base, extra = divmod(num_layers, pp)
        if extra and not uneven_default:
            raise UserError(f"{num_layers} layers do not split evenly over pipeline size {pp}; give --num-layer-list")
        return [base + (1 if i < extra else 0) for i in range(pp)]
    shown = ",".join(map(str, counts))
    if len(counts) != pp:
        raise UserError(f"--num-layer-list {shown} has {len(counts)} entries but the pipeline size is {pp}: "
                        "give one layer count per pipeline stage")
    if sum(counts) != num_layers or min(counts) < 1:
        raise UserError(f"--num-layer-list {shown} sums to {sum(counts)} but the model has {num_layers} layers "
                        "(model.num_layers; each stage needs at least 1)")
    return counts
