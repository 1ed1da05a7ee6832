"""Models: where weights come from (a local folder or a hub id, :mod:`.hub`), their precision
(:mod:`.precision`), and the tiny local model that tests and the quickstart build (:mod:`.tiny`).

The tiny-model helpers are imported on first use, so ``bias_ray.models.hub`` stays light (the
spec imports it while validating).
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_tiny_model", "ensure_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from bias_ray.models import tiny

        return getattr(tiny, name)
    raise AttributeError(f"module 'bias_ray.models' has no attribute {name!r}")
