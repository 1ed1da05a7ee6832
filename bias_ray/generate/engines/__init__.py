"""Generation engines: one interface, chosen by ``generation.engine`` in the spec.

An engine turns a Ray Dataset with a ``prompt`` column into one with a ``generated_text``
column. Engine modules import their heavy libraries lazily (vLLM only on GPU nodes).
"""

from __future__ import annotations

from typing import Protocol

from bias_ray.registry import Registry


class Engine(Protocol):
    def apply(self, ds, spec) -> object:  # ray.data.Dataset -> ray.data.Dataset
        ...


ENGINES: Registry[type] = Registry("engine")

from bias_ray.generate.engines import transformers_engine  # noqa: E402,F401  (registers)
