"""Pipeline parallelism with `torch.distributed.pipelining`: the unchanged Transformer cut into stages from
outside (torchtitan's pipeline_llm), run by torch's GPipe / 1F1B schedules over the step's micro-batches.

A stage keeps its own blocks under their global indices (a ModuleDict "3" -> block 3, so state-dict names
stay native: `layers.3.attn.q_proj.weight` on whichever stage holds it), the embedding only on the first
stage, the final norm and LM head only on the last. Uneven splits come from Megatron's --num-layer-list
(`parallel.num_layer_list`, checked by `mesh.plan_layout`).

The last stage's output is the final norm's hidden states; the schedule's loss function hands them to the
task (`Task.loss_from_hidden`), which computes the loss through the model's cross_entropy kernel (chunked,
vocab-parallel under TP), so no stage ever holds the logits. The schedule's target is the micro-batch index:
the loss function finds that micro-batch's labels and any other fields the task needs.

With data parallelism the stage module is the root of `fully_shard` (its blocks each a unit of their own):
torch's schedule recognises an FSDP stage and turns its grad sync off until the step's last backward, then
reduce-scatters once. Validation reads the LM head outside the stage's forward, so it gathers the root's
parameters for that (`PipelinedModel`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from llmctl.core.errors import UserError
from llmctl.core.nn.model import Documents
from llmctl.core.train.task import head_loss


SCHEDULES = {"1f1b": Schedule1F1B, "gpipe": ScheduleGPipe}


def check_pp(cfg, schedule: str = "1f1b") -> None:
    """What a model must allow to be cut into stages, and a schedule torch has."""
    if schedule not in SCHEDULES:
        raise UserError(f"config key 'parallel.pp_schedule': '{schedule}' is not one of {', '.join(SCHEDULES)}")
    if cfg.tie_embeddings:
        raise UserError("pipeline parallelism with model.tie_embeddings would split one weight over the first "
                        "and last stages; untie it (model.tie_embeddings=false) or use parallel.pp=1")


def cut_stage(model: torch.nn.Module, layers: range, first: bool, last: bool) -> torch.nn.Module:
    """Keep only this stage's parts of `model` (in place): its blocks, the embedding on the first stage,
    the norm and LM head on the last."""
    if not (first and last):
        check_pp(model.cfg)  # also in the strategy's preflight; here for callers that cut stages themselves
    model.layers = torch.nn.ModuleDict({str(i): model.layers[i] for i in layers})
    if not first:
        model.embed = None
    if not last:
        model.norm = None
        model.lm_head = None
    return model


class StageModule(torch.nn.Module):
    """One stage's slice of `Transformer.forward` (training: no cache, no padding mask): tokens or the
    previous stage's hidden states in, hidden states out (after the final norm on the last stage).

    Rows holding several documents (neat-packed samples) come with `positions` [B, T] and `segments` [B, T],
    each token's document number (consecutive tokens of one document share it): the schedule splits these
    keyword inputs into micro-batches as it splits the tokens, and hands them to every stage."""

    def __init__(self, model: torch.nn.Module, seq_len: int):
        super().__init__()
        self.model, self.seq_len = model, seq_len  # the hidden states may be a sequence shard (TP+SP)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None,
                segments: torch.Tensor | None = None) -> torch.Tensor:
        m = self.model
        if m.embed is not None:
            x = m.embed(x)
        if positions is None:
            positions = torch.arange(self.seq_len, device=x.device)[None]
        cos, sin = m.rope_cos_sin(positions)
        documents = None
        if segments is not None:
            _, lengths = torch.unique_consecutive(segments.reshape(-1), return_counts=True)
            documents = Documents(lengths.tolist())
        for index, block in m.layers.items():
            x = block(x, cos, sin, documents, None, int(index))
        return m.norm(x) if m.norm is not None else x


def stage_inputs(batches: list[dict]) -> dict[str, torch.Tensor]:
    """The step's keyword inputs for the stages when a micro-batch holds documents: every micro-batch's
    positions and document ids (`segments`), concatenated as the tokens are; a micro-batch without documents
    (e.g. only one-segment rows) is one document per row."""
    if all(b.get("documents") is None for b in batches):
        return {}
    parts = [document_inputs(b.get("positions"), b.get("documents"), *b["input_ids"].shape,
                             device=b["input_ids"].device) for b in batches]
    return {key: torch.cat([p[key] for p in parts]) for key in ("positions", "segments")}


def document_inputs(positions: torch.Tensor | None, documents: Documents | None, rows: int, length: int,
                    device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """One micro-batch's `positions` [rows, length] and `segments` (its documents' ids); without documents,
    one per row."""
    documents = documents if documents is not None else Documents([length] * rows)
    if positions is None:
        positions = torch.arange(length, device=device).expand(rows, length)
    return {"positions": positions, "segments": documents.ids(rows, length).to(positions.device)}


class Pipeline:
    """This rank's stage and its schedule. `run(inputs, n, loss_fn)`: one training step over `n`
    micro-batches (`inputs`: the first stage's tokens of all of them, concatenated on the batch dim)."""

    def __init__(self, stage_module: StageModule, pp_mesh: DeviceMesh, device: torch.device,
                 n_microbatches: int, schedule: str, example_input: torch.Tensor, example_output: torch.Tensor):
        self.rank, self.size = pp_mesh.get_local_rank(), pp_mesh.size()
        self.is_first, self.is_last = self.rank == 0, self.rank == self.size - 1
        # example shapes instead of torch's shape inference: under TP+SP the stage's activations are
        # sequence shards, which a meta-tensor trial forward through DTensor hooks cannot produce
        self.stage = PipelineStage(stage_module, self.rank, self.size, device, input_args=example_input,
                                   output_args=example_output, group=pp_mesh.get_group())
        self._loss_fn: Callable | None = None
        # scale_grads=False: the driver normalises by the step's global token count itself
        self.schedule = SCHEDULES[schedule](self.stage, n_microbatches=n_microbatches,
                                            loss_fn=self._call_loss, scale_grads=False)
        self.n_microbatches = n_microbatches
        # validation runs one micro-batch at a time, forward only, on a stage of its own
        self.eval_stage = PipelineStage(stage_module, self.rank, self.size, device, input_args=example_input,
                                        output_args=example_output, group=pp_mesh.get_group())
        self.eval_schedule = ScheduleGPipe(self.eval_stage, n_microbatches=1)

    def _call_loss(self, output: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self._loss_fn(output, int(index.reshape(-1)[0]))

    def run(self, inputs: torch.Tensor, loss_fn: Callable[[torch.Tensor, int], torch.Tensor],
            **stage_inputs: torch.Tensor) -> None:
        """`loss_fn(hidden, micro_batch_index) -> loss to back-propagate` runs on the last stage;
        `stage_inputs` (`stage_inputs(batches)`: positions and document ids) reach every stage."""
        self._loss_fn = loss_fn
        target = torch.arange(self.n_microbatches, device=inputs.device) if self.is_last else None
        args = (inputs,) if self.is_first else ()
        self.schedule.step(*args, target=target, return_outputs=False, **stage_inputs)

    def forward_only(self, inputs: torch.Tensor, **stage_inputs: torch.Tensor) -> torch.Tensor | None:
        """One micro-batch through every stage; the last stage's hidden states there, None elsewhere."""
        out = self.eval_schedule.step(*((inputs,) if self.is_first else ()), **stage_inputs)
        return out if self.is_last else None


class PipelinedModel(torch.nn.Module):
    """What the driver holds under PP: the stage (trained through `Pipeline.run`), and `model(tokens,
    labels)` -> per-token loss for validation, through a forward-only pass of the pipeline. Stages other
    than the last return zeros; the strategy counts only the last stage's sums."""

    def __init__(self, stage: StageModule, pipeline: Pipeline):
        super().__init__()
        self.stage, self.pipeline = stage, pipeline

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None, *,
                positions: torch.Tensor | None = None, documents: Documents | None = None,
                **kwargs) -> torch.Tensor:
        if targets is None or kwargs:
            raise UserError("a pipeline-parallel model computes training/validation losses only")
        batch = {"input_ids": tokens, "positions": positions, "documents": documents}
        hidden = self.pipeline.forward_only(tokens, **stage_inputs([batch]))
        if hidden is None:
            return torch.zeros(targets.shape, device=tokens.device)
        if not isinstance(self.stage, FSDPModule):
            return head_loss(self.stage.model, hidden, targets)
        # the LM head is read outside the stage's forward, where FSDP has resharded the root's parameters
        # (the final norm's and head's): gather them for the loss
        self.stage.unshard()
        try:
            return head_loss(self.stage.model, hidden, targets)
        finally:
            self.stage.reshard()
