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

With ``training.fsdp`` (``sharded``) the student is sharded over the workers with torch's FSDP2
(:meth:`Collective.shard`: ``fully_shard`` on every transformer block, then on the whole model). Each worker
holds ``1/W`` of every parameter, gradient and optimizer state, and all-gathers a block's weights for its
forward and backward; FSDP2 reduce-scatters the gradients as their mean over the workers, the same mean that
:meth:`Collective.average_gradients` takes without sharding, so the arithmetic above holds unchanged. A sharded
forward needs every worker: evaluation and every extra forward run on all of them (rank 0 still reports), and
the checkpoint gathers the trainable weights and their optimizer state in full on rank 0 (:meth:`
Collective.trainable_state`), in the one-worker format, so a checkpoint resumes on any number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Collective:
    """This worker's place in the trial's process group (``torch.distributed``, initialised by Ray Train)."""

    rank: int = 0
    world_size: int = 1
    sharded: bool = False  # training.fsdp: the student's weights are sharded over the workers (FSDP2)

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

    @property
    def every_worker_forwards(self) -> bool:
        """A sharded forward all-gathers each block's weights from every worker, so all of them must run it."""
        return self.sharded

    def average_gradients(self, parameters: list[Any], step_loss: float) -> float:
        """Average the trainable parameters' gradients over the workers, in one flat all-reduce, and sum the
        workers' shares of the step loss (each is ``sum_k loss_k * n_k / N`` over its rows). Returns the
        step's loss over all ``N`` rows. Sharded, FSDP2 has averaged the gradients in its backward already."""
        if self.is_local:
            return step_loss
        import torch
        import torch.distributed as dist

        if self.sharded:
            return float(self.all_sum(torch.tensor([step_loss], dtype=torch.float32, device=_device(parameters))))

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

    def shard(self, model: Any, device: str) -> Any:
        """FSDP2 over the workers on ``device`` ("cuda" or "cpu"): ``fully_shard`` on every module whose class the
        model names as a block never to split (``_no_split_modules``: a decoder or encoder layer), then on the
        whole model, which holds the rest (embeddings, head, LoRA's classifier). FSDP2 moves each block to the
        device as it shards it, so a student larger than one GPU never lies whole on one (it is built in CPU
        memory on every worker first)."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device, (self.world_size,))
        blocks: set[str] = set()
        for module in model.modules():
            blocks.update(getattr(module, "_no_split_modules", None) or [])
        for module in list(model.modules()):
            if type(module).__name__ in blocks:
                fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    def trainable_state(self, model: Any, optimizer: Any, names: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(trainable weights by name, optimizer state)`` as one worker saves them (the optimizer's state keyed
        by the position of its parameter). Sharded, both are gathered in full on rank 0 (a collective: every
        worker calls it; the others get empty dicts), from the trainable weights only. ``names``: the
        optimizer's parameters' names, in its order (taken before the first forward: FSDP2 leaves the root's
        parameters unsharded after one, as new tensors)."""
        if not self.sharded:
            return ({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
                    optimizer.state_dict())
        from torch.distributed.tensor import DTensor

        def gathered(value: Any) -> Any:  # an all-gather for a shard: every worker calls it, in the same order
            full = value.full_tensor() if isinstance(value, DTensor) else value
            return full.detach().cpu().clone() if hasattr(full, "detach") else full

        weights = {}
        held = [p for group in optimizer.param_groups for p in group["params"]]  # the sharded originals
        for name, p in zip(names, held, strict=True):  # the trainable ones only: a frozen base is never gathered
            full = gathered(p)
            if self.is_leader:
                weights[name] = full
        optimizer_state = optimizer.state_dict()  # by position, each value a shard like its parameter's
        state = {i: {k: gathered(v) for k, v in sorted(per_parameter.items())}
                 for i, per_parameter in sorted(optimizer_state["state"].items())}
        if not self.is_leader:
            return {}, {}
        return weights, {"state": state, "param_groups": optimizer_state["param_groups"]}

    def load_trainable_state(self, model: Any, optimizer: Any, names: list[str], weights: dict[str, Any],
                             optimizer_state: dict[str, Any]) -> None:
        """Load what :meth:`trainable_state` saved (on any number of workers); sharded, every worker takes its
        shard of the full tensors it was given."""
        if not self.sharded:
            model.load_state_dict(weights, strict=False)
            optimizer.load_state_dict(optimizer_state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(model, dict(weights), options=options)  # it fills the dict it is given
        set_optimizer_state_dict(model, optimizer, _by_name(optimizer_state, names), options=options)


LOCAL = Collective()


def _device(parameters: list[Any]) -> Any:
    return parameters[0].device if parameters else "cpu"


def _by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """An optimizer state keyed by position (the one-worker checkpoint's) keyed by parameter name instead, as
    torch.distributed.checkpoint's ``set_optimizer_state_dict`` takes it."""
    return {"state": {names[int(i)]: v for i, v in state["state"].items()},
            "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]]}


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
