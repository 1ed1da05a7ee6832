"""Models: where weights come from (a local folder or a hub id, :mod:`.hub`), their precision
(:mod:`.precision`), and the tiny local model that tests and the quickstart build (:mod:`.tiny`,
random init or pretrained on local real text, :mod:`.pretrain`).

The tiny-model helpers are imported on first use, so ``bias_ray.models.hub`` stays light (the
spec imports it while validating).
"""

from __future__ import annotations

from typing import Any

_HOMES = {"build_tiny_model": "tiny", "ensure_model": "ensure", "PretrainConfig": "pretrain",
          "pretrain_tiny_model": "pretrain"}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"bias_ray.models.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'bias_ray.models' has no attribute {name!r}")
