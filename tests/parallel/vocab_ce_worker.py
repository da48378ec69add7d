"""torchrun worker of test_vocab_parallel_ce: the tensor-parallel cross-entropy kernel on a [N, H] input with
the vocabulary split over the ranks, every tensor any op creates (forward and backward) recorded by a
TorchDispatchMode. Rank 0 writes a JSON report: the shapes seen, and the loss and gradients' largest
differences from F.cross_entropy over the full logits; and, for a vocabulary padded past its real rows, from
F.cross_entropy over the real rows."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from llmctl.parallel.tensor_parallel import vocab_parallel_cross_entropy

N, H, V, CHUNK = 24, 16, 96, 5  # N not a multiple of CHUNK: a short last chunk too
REAL = (53, 40)  # padded vocabularies: rank 1's shard part real, part padding; rank 1's shard all padding


class Shapes(TorchDispatchMode):
    """Every tensor an aten op returns, by shape."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[int, ...]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.seen.update(tuple(t.shape) for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def padded_case(mesh, hidden, weight, grad_out, real: int) -> dict:
    """The weight's rows past `real` are vocabulary padding, their logits pushed high: the kernel's loss and
    gradients equal F.cross_entropy over the real rows alone, and the padding gets no gradient."""
    weight = weight.clone()
    weight[real:] = hidden.mean(0) * 50  # a padded logit would win every softmax
    targets = torch.randint(0, real, (N,))
    targets[[2, 9]] = -100
    h = hidden.clone().requires_grad_()
    w = distribute_tensor(weight, mesh, [Shard(0)]).requires_grad_()
    losses = vocab_parallel_cross_entropy(h, w, targets, chunk=CHUNK, vocab_size=real)
    (losses * grad_out).sum().backward()
    href, wref = hidden.clone().requires_grad_(), weight[:real].clone().requires_grad_()
    ref = F.cross_entropy(href @ wref.t(), targets, ignore_index=-100, reduction="none")
    (ref * grad_out).sum().backward()
    grad = w.grad.full_tensor()
    return {"loss_diff": (losses - ref).abs().max().item(),
            "hidden_grad_diff": (h.grad - href.grad).abs().max().item(),
            "weight_grad_diff": (grad[:real] - wref.grad).abs().max().item(),
            "padding_grad": grad[real:].abs().max().item()}


def main(report: str) -> None:
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    torch.manual_seed(0)
    hidden = torch.randn(N, H, dtype=torch.float32)
    weight = torch.randn(V, H, dtype=torch.float32)
    targets = torch.randint(0, V, (N,))
    targets[[1, 7, 8]] = -100
    grad_out = torch.rand(N, dtype=torch.float32)  # a non-uniform upstream gradient

    h = hidden.clone().requires_grad_()
    w = distribute_tensor(weight, mesh, [Shard(0)]).requires_grad_()
    with Shapes() as shapes:
        losses = vocab_parallel_cross_entropy(h, w, targets, chunk=CHUNK)
        (losses * grad_out).sum().backward()

    href, wref = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    ref = F.cross_entropy(href @ wref.t(), targets, ignore_index=-100, reduction="none")
    (ref * grad_out).sum().backward()
    result = {
        "seen": sorted(shapes.seen),
        "loss_diff": (losses - ref).abs().max().item(),
        "hidden_grad_diff": (h.grad - href.grad).abs().max().item(),
        "weight_grad_diff": (w.grad.full_tensor() - wref.grad).abs().max().item(),
        "loss_dtype": str(losses.dtype), "world": dist.get_world_size(), "V": V, "N": N, "chunk": CHUNK,
        "padded": {str(real): padded_case(mesh, hidden, weight, grad_out, real) for real in REAL},
    }
    if dist.get_rank() == 0:
        with open(report, "w") as f:
            json.dump(result, f)
    dist.barrier()  # no collective in flight when the group goes (gloo aborts the process otherwise)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
    from llmctl.cli.main import leave_finished_worker

    leave_finished_worker()  # as `llmctl` under torchrun: no interpreter teardown after a finished run
