"""Generation engines: one interface, chosen by ``generation.engine`` in the spec.

An engine turns a Ray Dataset with a ``prompt`` column into one that also has
``generated_text`` and ``generated_tokens``, and optionally ``engine_error`` (non-empty: the row
failed and goes to quarantine), ``engine_s`` (engine seconds spent on the row) and ``device``.
Every other column passes through. Engine modules import heavy libraries lazily (vLLM only on
GPU nodes), so registering an engine costs nothing. Adding an engine is one module in this
folder with an ``@ENGINES.register("name")`` class.
"""

from __future__ import annotations

from bias_ray.generate.engines.base import Engine, sample_seed
from bias_ray.registry import ENGINES, import_plugins

import_plugins(__name__)  # every module of this folder registers its engine: adding one is one file

__all__ = ["ENGINES", "Engine", "sample_seed"]
