"""What every engine shares: its interface, the per-sample seed, the cluster's GPUs (no engine imports here)."""

from __future__ import annotations

from typing import Protocol


class Engine(Protocol):
    def apply(self, ds, spec) -> object:  # ray.data.Dataset -> ray.data.Dataset
        ...


def sample_seed(sample_id: object) -> int:
    """The sampling seed of one sample, from its id: the same sample draws the same text on any engine."""
    return int(str(sample_id)[:8], 16)


def cluster_gpus() -> float:
    """GPUs in the Ray cluster (the engine's actors run there), else on this machine.

    Asked of Ray, not of torch in the driver: on a cluster the driver often runs on a head node
    without GPUs while the workers have them, and importing torch only to ask costs the job's
    start-up seconds.
    """
    import ray

    if ray.is_initialized():
        return float(ray.cluster_resources().get("GPU", 0.0))
    import torch

    return float(torch.cuda.device_count())
