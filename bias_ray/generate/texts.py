"""Texts for prompts made elsewhere (the analysis' neutral probes): the spec's generator, engine and sampling,
through Ray Data, as the generation job writes its rows, without the job's store."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from bias_ray.generate.engines import ENGINES
from bias_ray.generate.quality import clean_generations
from bias_ray.spec import SweepSpec


def generate_texts(spec: SweepSpec, prompts: pd.DataFrame) -> pd.DataFrame:
    """``prompts`` (columns ``sample_id``, ``prompt``, and any others, kept) in their order, with ``text`` (the
    answer, cleaned as the job cleans its rows) and ``engine_error`` ("" when none). The sampling seed of a batch
    is its first ``sample_id``'s, as in the job, so the same prompts give the same texts."""
    import ray

    from bias_ray.runtime import init_ray

    missing = {"sample_id", "prompt"} - set(prompts.columns)
    if missing:
        raise ValueError(f"generate_texts needs the columns {sorted(missing)}")
    if prompts.empty:
        return prompts.assign(text=pd.Series(dtype=str), engine_error=pd.Series(dtype=str))
    init_ray()
    frame = prompts.reset_index(drop=True).assign(index=lambda f: range(len(f)))
    ds = ray.data.from_pandas(frame)
    out = ENGINES.get(spec.generation.engine)().apply(ds, spec).to_pandas()
    out = out.sort_values("index").reset_index(drop=True)
    generated = out["generated_text"].fillna("").astype(str) if "generated_text" in out else pd.Series([""] * len(out))
    cleaned = clean_generations(pa.array(generated.tolist(), pa.string())).to_pylist()
    errors = out["engine_error"].fillna("").astype(str) if "engine_error" in out else pd.Series([""] * len(out))
    return frame.drop(columns="index").assign(text=cleaned, engine_error=errors.to_numpy())
