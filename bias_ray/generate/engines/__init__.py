"""Generation engines: one interface, chosen by ``generation.engine`` in the spec.

An engine turns a Ray Dataset with a ``prompt`` column into one that also has
``generated_text`` and ``generated_tokens``, and optionally ``engine_error`` (non-empty: the row
failed and goes to quarantine), ``engine_s`` (engine seconds spent on the row) and ``device``.
Every other column passes through. Engine modules import heavy libraries lazily (vLLM only on
GPU nodes), so registering an engine costs nothing.
"""

from __future__ import annotations

from typing import Protocol

from bias_ray.registry import Registry


class Engine(Protocol):
    def apply(self, ds, spec) -> object:  # ray.data.Dataset -> ray.data.Dataset
        ...


ENGINES: Registry[type] = Registry("engine")


def sample_seed(sample_id: object) -> int:
    """The sampling seed of one sample, from its id: the same sample draws the same text on any engine."""
    return int(str(sample_id)[:8], 16)


from bias_ray.generate.engines import (  # noqa: E402,F401  (registers)
    http_engine,
    null_engine,
    transformers_engine,
    vllm_engine,
)
