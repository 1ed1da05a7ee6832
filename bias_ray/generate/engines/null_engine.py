"""The null engine: a fixed output per prompt at no model cost, for measuring the pipeline itself.

With it a benchmark sees what Ray Data, post-processing and the shard writer can carry (rows/s)
without a model in the way. Its text is one fixed sentence plus the sample id, so rows pass the
quality filters and are not all exact duplicates of each other (dedup keeps every row).
"""

from __future__ import annotations

import numpy as np

from bias_ray.registry import ENGINES

NULL_TEXT = "this is a fixed statement written by the null engine for sample"


def null_generate(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``generated_text`` = the fixed sentence + the sample id; no model, no error."""
    n = len(batch["prompt"])
    batch["generated_text"] = np.array([f"{NULL_TEXT} {sid}" for sid in batch["sample_id"]], dtype=object)
    batch["generated_tokens"] = np.full(n, len(NULL_TEXT.split()) + 1, dtype=np.int64)
    batch["engine_error"] = np.full(n, "", dtype=object)
    batch["engine_s"] = np.zeros(n)
    batch["device"] = np.full(n, "null", dtype=object)
    return batch


@ENGINES.register("null")
class NullEngine:
    """Stateless Ray Data tasks (no actor pool, no model): the pipeline's own ceiling."""

    def apply(self, ds, spec):
        return ds.map_batches(null_generate, batch_size=spec.generation.batch_size, batch_format="numpy",
                              num_cpus=0.5)
