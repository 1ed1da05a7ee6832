"""Local models: the tiny causal LM (random init or pretrained on local real text)."""

from bias_ray.models.pretrain import PretrainConfig, pretrain_tiny_model
from bias_ray.models.tiny import build_tiny_model, ensure_model

__all__ = ["PretrainConfig", "build_tiny_model", "ensure_model", "pretrain_tiny_model"]
