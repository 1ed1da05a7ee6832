"""The generation job: prompts -> engine (Ray Data) -> cleaned augmented rows in Parquet."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from bias_ray.data.loaders import load_toxigen
from bias_ray.generate.engines import ENGINES
from bias_ray.generate.prompts import build_prompts, clean_generation
from bias_ray.spec import SweepSpec

AUGMENTED_COLUMNS = ["id", "text", "label", "group", "bias_type", "split", "source"]


def _postprocess(batch: pd.DataFrame, engine: str, model: str) -> pd.DataFrame:
    batch = batch.copy()
    batch["text"] = [clean_generation(t) for t in batch["generated_text"]]
    batch["id"] = batch["sample_id"]
    batch["split"] = "train"
    batch["source"] = "augmented"
    batch["engine"] = engine
    batch["model"] = model
    return batch.drop(columns=["prompt", "generated_text"])


def generate(spec: SweepSpec) -> Path:
    """Write the augmented data for every bias type of the spec under ``spec.augmented_dir``."""
    import ray

    from bias_ray.runtime import init_ray

    out = spec.augmented_dir
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        return out
    init_ray()
    seed_rows = load_toxigen(spec.data.resolved_root, spec.data.test_fraction)
    prompts = build_prompts(spec, seed_rows[seed_rows["split"] == "train"])
    started = time.time()
    ds = ray.data.from_pandas(prompts)
    ds = ENGINES.get(spec.generation.engine)().apply(ds, spec)
    ds = ds.map_batches(
        _postprocess,
        batch_format="pandas",
        fn_kwargs={"engine": spec.generation.engine, "model": str(spec.models.generator)},
    )
    shards = out / "shards"
    ds.write_parquet(str(shards))
    frame = pd.read_parquet(shards)
    manifest = {
        "rows": len(frame),
        "prompts": len(prompts),
        "generated_tokens": int(frame["generated_tokens"].sum()),
        "wall_s": round(time.time() - started, 3),
        "engine": spec.generation.engine,
        "model": str(spec.models.generator),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return out


def load_augmented(spec: SweepSpec) -> pd.DataFrame:
    """The augmented rows of a finished generation job."""
    shards = spec.augmented_dir / "shards"
    if not (spec.augmented_dir / "manifest.json").exists():
        raise FileNotFoundError(
            f"no finished generation under {spec.augmented_dir}; run `bias-ray generate SPEC` first"
        )
    return pd.read_parquet(shards)
