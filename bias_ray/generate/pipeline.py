"""The generation job: lazy prompts -> engine (Ray Data, streaming) -> Parquet shards + manifest.

Layout under ``spec.augmented_dir``::

    job.json              what this folder holds (settings fingerprint, requested prompts)
    shards/part-*.parquet generated rows (kept and filtered, with ``drop_reason``)
    quarantine/part-*.parquet rows the engine failed on or answered malformed, with ``reason``
    duplicates.parquet    exact-duplicate rows dropped at the end (``sample_id, duplicate_of``)
    manifest.json         written last: counts, drops by reason, throughput; ``status: complete``

Crash safety: the driver is the only writer and every file appears by an atomic rename, so
after a ``kill -9`` each shard is either whole or absent. A rerun reads the sample ids already
committed (shards + quarantine), builds prompts only for the others, and a finished job
(complete manifest, same fingerprint) is left as it is.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from bias_ray.data.loaders import stable_id
from bias_ray.generate.engines import ENGINES
from bias_ray.generate.measure import generator_measures
from bias_ray.generate.prompts import PromptPlan, make_plan, sampling_params
from bias_ray.generate.quality import clean_generation, drop_reason, find_duplicates
from bias_ray.spec import QualitySpec, SweepSpec

AUGMENTED_COLUMNS = ["id", "text", "label", "group", "bias_type", "split", "source"]
SHARD_COLUMNS = ["sample_id", "index", "text", "generated_text", "generated_tokens", "drop_reason", "label", "group",
                 "bias_type", "stance", "seed_ids", "template_id", "template_version", "engine", "model", "sampling",
                 "device", "engine_s"]


class GenerationJobError(RuntimeError):
    """The output folder cannot be resumed by this spec; the message says how to fix it."""


# ---------------------------------------------------------------- files
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_json(path: Path, obj: dict[str, Any]) -> None:
    _atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def _atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    frame.to_parquet(tmp, index=False)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def _read_parts(folder: Path, columns: list[str] | None = None) -> pd.DataFrame:
    parts = _parts(folder)
    if not parts:
        return pd.DataFrame(columns=columns or [])
    return pd.concat([pq.read_table(p, columns=columns).to_pandas() for p in parts], ignore_index=True)


def committed_ids(out: Path) -> set[str]:
    """Sample ids whose outcome is on disk (generated or quarantined): a rerun skips them."""
    ids: set[str] = set()
    for folder in (out / "shards", out / "quarantine"):
        for p in _parts(folder):
            ids.update(pq.read_table(p, columns=["sample_id"]).column("sample_id").to_pylist())
    return ids


# ---------------------------------------------------------------- Ray Data stages
def _prompt_batch(batch: dict[str, np.ndarray], plan: PromptPlan) -> pd.DataFrame:
    return plan.rows(batch["data"])


def _postprocess(batch: pd.DataFrame, engine: str, model: str, sampling: str, quality: QualitySpec) -> pd.DataFrame:
    """Clean, filter and label rows with provenance; split failures off via ``engine_error``."""
    batch = batch.copy()
    n = len(batch)
    for col, default in (("engine_error", ""), ("engine_s", 0.0), ("device", engine), ("generated_tokens", 0)):
        if col not in batch:
            batch[col] = default
    if "__inference_error__" in batch:  # Ray Data LLM's error column (vLLM should_continue_on_error)
        err = batch["__inference_error__"].fillna("").astype(str)
        batch["engine_error"] = np.where(err != "", "engine error: " + err, batch["engine_error"].astype(str))
    batch["engine_error"] = batch["engine_error"].fillna("").astype(str)
    batch["generated_text"] = batch["generated_text"].fillna("").astype(str)
    batch["generated_tokens"] = batch["generated_tokens"].fillna(0).astype(np.int64)
    batch["text"] = [clean_generation(t) for t in batch["generated_text"]]
    batch["drop_reason"] = [drop_reason(t, quality) for t in batch["text"]]
    batch["engine"], batch["model"], batch["sampling"] = engine, model, sampling
    batch["device"] = batch["device"].astype(str)
    batch["engine_s"] = batch["engine_s"].astype(np.float64)
    batch["index"] = batch["index"].astype(np.int64)
    assert len(batch) == n
    return batch[[*SHARD_COLUMNS, "engine_error"]]


# ---------------------------------------------------------------- progress
class _Progress:
    """A rich progress bar with samples/s and tokens/s (off when BIAS_RAY_PROGRESS=0)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.started, self.samples, self.tokens = time.perf_counter(), 0, 0
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("generate"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rates]}"), TimeElapsedColumn())
            self.task = self.bar.add_task("generate", total=total, completed=done, rates="")
            self.bar.start()

    def update(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens
        if self.bar is not None:
            dt = max(1e-9, time.perf_counter() - self.started)
            self.bar.update(self.task, advance=samples,
                            rates=f"{self.samples / dt:,.1f} samples/s {self.tokens / dt:,.1f} tokens/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# ---------------------------------------------------------------- the job
def _job_info(spec: SweepSpec, plan: PromptPlan) -> dict[str, Any]:
    return {"fingerprint": plan.fingerprint, "requested": plan.total, "engine": spec.generation.engine,
            "model": str(spec.models.generator), "template_id": plan.template["id"],
            "template_version": int(plan.template["version"]), "sampling": sampling_params(spec),
            "bias_types": [b.name for b in spec.bias_type_specs], "stances": spec.generation.stances,
            "samples_per_bias_type": spec.generation.samples_per_bias_type}


def _check_job(out: Path, job: dict[str, Any]) -> None:
    path = out / "job.json"
    if path.exists():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in job} != job:
            changed = sorted(k for k in job if old.get(k) != job[k])
            raise GenerationJobError(
                f"{out} holds a generation job with other settings (changed: {', '.join(changed)}); "
                "delete that folder to start over, or set another output_dir"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write_json(path, job)


def _plan(spec: SweepSpec) -> PromptPlan:
    return make_plan(spec)


def _stream(spec: SweepSpec, plan: PromptPlan, todo: np.ndarray, out: Path, done: int, progress: bool) -> dict:
    """Generate the prompts ``todo`` and commit each batch as a shard; returns this run's counters."""
    import ray

    from bias_ray.runtime import init_ray

    init_ray()
    gen = spec.generation
    blocks = max(1, -(-len(todo) // max(gen.batch_size, min(gen.shard_rows, 4 * gen.batch_size))))
    ds = ray.data.from_numpy(np.array_split(todo, blocks))
    # its own tasks (not fused into the engine's actors), so prompts are built while the engine generates
    ds = ds.map_batches(_prompt_batch, fn_kwargs={"plan": plan}, batch_size=None, batch_format="numpy", num_cpus=0.5)
    ds = ENGINES.get(gen.engine)().apply(ds, spec)
    ds = ds.map_batches(
        _postprocess, batch_format="pandas", batch_size=None,
        fn_kwargs={"engine": gen.engine, "model": str(spec.models.generator),
                   "sampling": json.dumps(sampling_params(spec), sort_keys=True), "quality": gen.quality},
    )
    (out / "shards").mkdir(parents=True, exist_ok=True)
    (out / "quarantine").mkdir(parents=True, exist_ok=True)
    run_tag = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    bar = _Progress(plan.total, done, progress)
    stats = {"prompts": 0, "generated_tokens": 0, "quarantined": 0, "shards": 0}
    started = time.perf_counter()
    try:
        for seq, batch in enumerate(ds.iter_batches(batch_size=gen.shard_rows, batch_format="pandas",
                                                    prefetch_batches=1)):
            failed = batch["engine_error"] != ""
            name = f"part-{run_tag}-{seq:06d}.parquet"
            if failed.any():  # quarantine first: a crash in between regenerates only the good rows
                bad = batch[failed].rename(columns={"engine_error": "reason"})
                _atomic_write_parquet(bad[["sample_id", "index", "reason", "bias_type", "group", "stance",
                                           "engine", "model", "generated_text"]], out / "quarantine" / name)
            good = batch[~failed].drop(columns=["engine_error"])
            if len(good):
                _atomic_write_parquet(good, out / "shards" / name)
            tokens = int(batch["generated_tokens"].sum())
            stats["prompts"] += len(batch)
            stats["generated_tokens"] += tokens
            stats["quarantined"] += int(failed.sum())
            stats["shards"] += 1
            bar.update(len(batch), tokens)
            stats.setdefault("first_shard_s", time.perf_counter() - started)
            stats.setdefault("first_shard_prompts", len(batch))
            stats["last_shard_s"] = time.perf_counter() - started
    finally:
        bar.close()
    stats["wall_s"] = time.perf_counter() - started
    return stats


def _finalize(spec: SweepSpec, plan: PromptPlan, job: dict[str, Any], run: dict[str, Any],
              ids: list[str]) -> dict[str, Any]:
    """Check completeness, drop exact duplicates, write the manifest (last, atomically)."""
    out = spec.augmented_dir
    rows = _read_parts(out / "shards", ["sample_id", "text", "drop_reason", "generated_tokens", "engine_s", "device"])
    quarantine = _read_parts(out / "quarantine", ["sample_id", "reason"])
    ids = pd.concat([rows["sample_id"], quarantine["sample_id"]], ignore_index=True)
    requested = set(ids)
    repeated, missing = int(ids.duplicated().sum()), len(requested - set(ids))
    if repeated or missing or len(ids) != plan.total:
        raise GenerationJobError(f"{out}: {missing} requested samples missing and {repeated} repeated after the run; "
                                 "rerun `bias-ray generate` to resume (this should not happen: please report it)")
    dups = find_duplicates(rows) if spec.generation.quality.dedup else pd.DataFrame(
        {"sample_id": pd.Series(dtype=str), "duplicate_of": pd.Series(dtype=str)})
    _atomic_write_parquet(dups, out / "duplicates.parquet")
    dropped = rows.loc[rows["drop_reason"] != "", "drop_reason"].value_counts().to_dict()
    if len(dups):
        dropped["duplicate"] = len(dups)
    # "malformed response (...): ..." / "engine error: ..." -> counted by the part before the details
    reasons = pd.Series([re.split(r"[:(]", str(r), maxsplit=1)[0].strip() for r in quarantine["reason"]],
                        dtype=object).value_counts().to_dict()
    on_gpu = rows["device"].str.startswith("cuda")
    tokens = int(rows["generated_tokens"].sum())
    run_tokens, run_wall = run.get("generated_tokens", 0), run.get("wall_s", 0.0)
    manifest = {
        **job,
        "status": "complete",
        "rows": int(len(rows) - sum(dropped.values())),
        "prompts": plan.total,
        "generated": int(len(rows)),
        "dropped": {k: int(v) for k, v in sorted(dropped.items())},
        "quarantined": int(len(quarantine)),
        "quarantine_reasons": {k: int(v) for k, v in sorted(reasons.items())},
        "generated_tokens": tokens,
        "engine_seconds": round(float(rows["engine_s"].sum()), 3),
        "gpu_seconds": round(float(rows.loc[on_gpu, "engine_s"].sum()), 3),
        "devices": sorted(rows["device"].unique().tolist()),
        "shards": len(_parts(out / "shards")),
        "last_run": {
            "prompts": run.get("prompts", 0),
            "generated_tokens": run_tokens,
            "wall_s": round(run_wall, 3),
            "samples_per_s": round(run.get("prompts", 0) / run_wall, 3) if run_wall else 0.0,
            "tokens_per_s": round(run_tokens / run_wall, 3) if run_wall else 0.0,
            "resumed_from": run.get("resumed_from", 0),
            "first_shard_s": round(run.get("first_shard_s", 0.0), 3),  # start-up: Ray Data plan, actors, model load
            "first_shard_prompts": run.get("first_shard_prompts", 0),
            "last_shard_s": round(run.get("last_shard_s", 0.0), 3),
        },
    }
    manifest["generator_measures"] = generator_measures(spec, out)  # names the group? hateful? per cell
    _atomic_write_json(out / "manifest.json", manifest)
    return manifest


def _log_wandb(spec: SweepSpec, manifest: dict[str, Any]) -> None:
    """Throughput and quality counts to W&B (never the spec's endpoint headers or keys)."""
    from bias_ray.train.sweep import wandb_mode

    mode = wandb_mode(spec.tracking.wandb)
    if mode == "disabled":
        return
    import wandb

    wandb_dir = spec.wandb_dir
    wandb_dir.mkdir(parents=True, exist_ok=True)
    flat = {k: v for k, v in manifest.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    flat.update({f"last_run/{k}": v for k, v in manifest["last_run"].items()})
    flat.update({f"dropped/{k}": v for k, v in manifest["dropped"].items()})
    config = {"engine": manifest["engine"], "model": manifest["model"], "sampling": manifest["sampling"],
              "template": f"{manifest['template_id']}@v{manifest['template_version']}"}
    run = wandb.init(project=spec.tracking.project, name=f"{spec.name}-generate", job_type="generate", mode=mode,
                     dir=str(wandb_dir), config=config, reinit=True)
    run.summary.update(flat)
    run.finish()


def generate(spec: SweepSpec, progress: bool | None = None) -> Path:
    """Write the augmented data for every bias type of the spec under ``spec.augmented_dir``; resumable."""
    out = spec.augmented_dir
    plan = _plan(spec)
    job = _job_info(spec, plan)
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("status") == "complete" and {k: manifest.get(k) for k in job} == job:
            return out  # finished with these very settings: nothing to do (other settings: _check_job says so)
    _check_job(out, job)
    for stale in out.glob("*/.part-*.tmp-*"):  # half-written files of a killed run
        stale.unlink(missing_ok=True)
    done = committed_ids(out)
    ids = plan.sample_ids(np.arange(plan.total))
    todo = np.array([i for i, sid in enumerate(ids) if sid not in done], dtype=np.int64)
    run: dict[str, Any] = {"resumed_from": len(done)}
    if len(todo):
        if progress is None:
            progress = os.environ.get("BIAS_RAY_PROGRESS", "1") == "1"
        run.update(_stream(spec, plan, todo, out, len(done), progress))
    manifest = _finalize(spec, plan, job, run, ids)
    _log_wandb(spec, manifest)
    return out


def load_augmented(spec: SweepSpec) -> pd.DataFrame:
    """The kept augmented rows of a finished generation job (filters and duplicates removed)."""
    out = spec.augmented_dir
    manifest = out / "manifest.json"
    if not manifest.exists() or json.loads(manifest.read_text()).get("status") != "complete":
        raise FileNotFoundError(f"no finished generation under {out}; run `bias-ray generate SPEC` first")
    rows = _read_parts(out / "shards")
    dup_path = out / "duplicates.parquet"
    dups = set(pd.read_parquet(dup_path)["sample_id"]) if dup_path.exists() else set()
    rows = rows[(rows["drop_reason"] == "") & ~rows["sample_id"].isin(dups)].copy()
    rows["id"] = rows["sample_id"]
    rows["split"] = "train"
    rows["source"] = "augmented"
    rest = [c for c in rows.columns if c not in AUGMENTED_COLUMNS]
    return rows[AUGMENTED_COLUMNS + rest].sort_values("index").reset_index(drop=True)


def import_augmented(spec: SweepSpec, rows: pd.DataFrame, source: str = "imported") -> Path:
    """Lay out externally made augmented rows as a finished generation job of ``spec``.

    For augmented data that exists already (another generator's output, a planted set in a study
    or a test): ``rows`` needs text, label, group and bias_type; ``id`` is kept as the sample id
    when given. ``load_augmented`` then reads them like generated rows.
    """
    missing = {"text", "label", "group", "bias_type"} - set(rows.columns)
    if missing:
        raise ValueError(f"augmented rows lack columns {sorted(missing)}; need text, label, group, bias_type")
    out = spec.augmented_dir
    if (out / "manifest.json").exists():
        raise FileExistsError(f"{out} already holds a generation job; delete it or change output_dir")
    rows = rows.reset_index(drop=True).copy()
    ids = rows["id"].astype(str) if "id" in rows else pd.Series(
        [stable_id(source, t, g, b) for t, g, b in zip(rows["text"], rows["group"], rows["bias_type"])])
    rows = rows.drop(columns=[c for c in ("id", "split", "source") if c in rows])
    rows["sample_id"] = ids.to_numpy()
    if rows["sample_id"].duplicated().any():
        raise ValueError("augmented rows repeat ids; give each row a unique id")
    rows["index"] = range(len(rows))
    rows["drop_reason"] = ""
    (out / "shards").mkdir(parents=True, exist_ok=True)
    rows.to_parquet(out / "shards" / "part-00000.parquet", index=False)
    (out / "manifest.json").write_text(json.dumps({"status": "complete", "rows": len(rows), "kept": len(rows),
                                                   "engine": source}, indent=2))
    return out
