"""What every engine shares: its interface and the per-sample seed (no engine imports here)."""

from __future__ import annotations

from typing import Protocol


class Engine(Protocol):
    def apply(self, ds, spec) -> object:  # ray.data.Dataset -> ray.data.Dataset
        ...


def sample_seed(sample_id: object) -> int:
    """The sampling seed of one sample, from its id: the same sample draws the same text on any engine."""
    return int(str(sample_id)[:8], 16)
