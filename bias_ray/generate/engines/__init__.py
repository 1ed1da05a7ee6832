"""Generation engines: one interface, chosen by ``generation.engine`` in the spec.

An engine turns a Ray Dataset with a ``prompt`` column into one that also has
``generated_text`` and ``generated_tokens``, and optionally ``engine_error`` (non-empty: the row
failed and goes to quarantine), ``engine_s`` (engine seconds spent on the row) and ``device``.
Every other column passes through. Engine modules import heavy libraries lazily (vLLM only on
GPU nodes), so registering an engine costs nothing.
"""

from __future__ import annotations

from bias_ray.generate.engines import (  # noqa: F401  (registers)
    http_engine,
    null_engine,
    transformers_engine,
    vllm_engine,
)
from bias_ray.generate.engines.base import Engine, sample_seed
from bias_ray.registry import ENGINES

__all__ = ["ENGINES", "Engine", "sample_seed"]
