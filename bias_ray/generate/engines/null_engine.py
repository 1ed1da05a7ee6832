"""The null engine: a fixed output per prompt at no model cost, for measuring the pipeline itself.

With it a benchmark sees what Ray Data, post-processing and the shard writer can carry (rows/s)
without a model in the way. Its text is one fixed sentence plus the sample id, so rows pass the
quality filters and are not all exact duplicates of each other (dedup keeps every row).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bias_ray.registry import ENGINES

NULL_TEXT = "this is a fixed statement written by the null engine for sample"


def null_generate(batch: pa.Table) -> pa.Table:
    """``generated_text`` = the fixed sentence + the sample id; no model, no error (whole Arrow columns)."""
    n = batch.num_rows
    outputs = {
        "generated_text": pc.binary_join_element_wise(NULL_TEXT, batch.column("sample_id"), " "),
        "generated_tokens": pa.array(np.full(n, len(NULL_TEXT.split()) + 1, dtype=np.int64)),
        "engine_error": pc.fill_null(pa.nulls(n, pa.string()), ""),
        "engine_s": pa.array(np.zeros(n)),
        "device": pc.fill_null(pa.nulls(n, pa.string()), "null"),
    }
    kept = [c for c in batch.column_names if c not in outputs]
    return pa.table([*(batch.column(c) for c in kept), *outputs.values()], names=[*kept, *outputs])


@ENGINES.register("null")
class NullEngine:
    """Stateless Ray Data tasks (no actor pool, no model): the pipeline's own ceiling.

    At 0.5 CPU, as the prompt and post-processing stages, so Ray Data fuses all three into one
    task per block: no block crosses the object store between them.
    """

    def apply(self, ds, spec):
        return ds.map_batches(null_generate, batch_size=spec.generation.batch_size, batch_format="pyarrow",
                              num_cpus=0.5)
