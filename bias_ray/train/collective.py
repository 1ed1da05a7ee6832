"""The few collective operations a data-parallel trial needs, and their one-worker identity.

A trial on ``W`` workers (``resources.workers_per_trial``, see :mod:`bias_ray.train.distributed`) splits each
optimizer step's ``N`` rows over the workers. Every quantity that the one-worker trial computes over a batch
is computed over the whole step's rows, not a worker's share:

- gradients: worker ``r`` back-propagates ``W * sum_k loss_k * n_k / N`` over its micro-batches, and the
  workers' gradients are averaged (one all-reduce per step), so the result is the gradient of the row-weighted
  mean loss over all ``N`` rows, the one-worker step's gradient (DDP's arithmetic);
- the loss mitigation's batch statistics (the mean representations of real and augmented rows, the number of
  rows a divergence averages over) are sums all-reduced across the workers (:meth:`Collective.all_sum`);
- the mitigations' counters are merged once per evaluation (:meth:`Collective.gather`).

``LOCAL`` (one worker) makes every operation the identity, so the one-worker trial's arithmetic is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Collective:
    """This worker's place in the trial's process group (``torch.distributed``, initialised by Ray Train)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_local(self) -> bool:
        return self.world_size == 1

    @property
    def is_leader(self) -> bool:
        """Rank 0 evaluates, reports the metrics and writes the checkpoint."""
        return self.rank == 0

    def all_sum(self, tensor: Any) -> Any:
        """The element-wise sum of ``tensor`` over the workers (a new tensor, outside the autograd graph)."""
        if self.is_local:
            return tensor
        import torch.distributed as dist

        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def gather(self, obj: Any) -> list[Any]:
        """Every worker's ``obj``, in rank order."""
        if self.is_local:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def average_gradients(self, parameters: list[Any], step_loss: float) -> float:
        """Average the trainable parameters' gradients over the workers, in one flat all-reduce, and sum the
        workers' shares of the step loss (each is ``sum_k loss_k * n_k / N`` over its rows). Returns the
        step's loss over all ``N`` rows."""
        if self.is_local:
            return step_loss
        import torch
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1).float() for g in grads] + [torch.tensor([step_loss], dtype=torch.float32,
                                                                                 device=grads[0].device)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, g in zip(parameters, grads):
            n = g.numel()
            p.grad = (flat[offset : offset + n] / self.world_size).view_as(p).to(p.dtype)
            offset += n
        return float(flat[-1])


LOCAL = Collective()


def split_step(total: int, micro_batch: int, collective: Collective) -> list[tuple[list[int], int]]:
    """One optimizer step's ``total`` rows as micro-batches: ``(this worker's row positions, the micro-batch's
    rows over all workers)``.

    One worker: consecutive slices of ``micro_batch`` rows. ``W`` workers: ``ceil(total / (micro_batch * W))``
    near-equal chunks, each dealt round-robin over the workers, so every worker runs the same number of
    micro-batches (the loss mitigation's collectives pair up) and none is empty (the caller trims ``total`` to
    a multiple of ``W``).
    """
    if collective.is_local:
        return [(list(range(s, min(s + micro_batch, total))), min(micro_batch, total - s))
                for s in range(0, total, micro_batch)]
    import numpy as np

    w = collective.world_size
    chunks = np.array_split(np.arange(total), -(-total // (micro_batch * w)))
    return [(chunk[collective.rank :: w].tolist(), len(chunk)) for chunk in chunks]
