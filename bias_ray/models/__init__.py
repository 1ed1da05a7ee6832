"""Local models: the project never downloads weights; it builds or loads them from folders."""

from bias_ray.models.tiny import build_tiny_model, ensure_model

__all__ = ["build_tiny_model", "ensure_model"]
