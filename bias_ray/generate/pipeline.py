"""The generation job: lazy prompts -> engine (Ray Data, streaming) -> Parquet shards + manifest.

The job writes into the store of augmented data under ``spec.augmented_dir``, through
:mod:`bias_ray.augmented.store` (its layout: shards, quarantine, duplicates, the row directory,
the manifest; every file by an atomic rename). Other stages read it through :mod:`bias_ray.augmented`.

Crash safety: the driver is the only writer and every file appears by an atomic rename, so
after a ``kill -9`` each shard is either whole or absent. A rerun reads the sample ids already
committed (shards + quarantine), builds prompts only for the others, and a finished job
(complete manifest, same fingerprint) is left as it is.

Memory does not grow with the job after generation either: the store's finalize
(:mod:`bias_ray.augmented.finalize`) streams the shards one at a time (counts, text hashes for
duplicates), and the readers
(:func:`bias_ray.augmented.load_augmented`, :func:`~bias_ray.augmented.augmented_strata`,
:func:`~bias_ray.augmented.augmented_rows`) push bias-type and index filters and a column
projection into pyarrow, so a trial reads its bias type's rows and the columns it uses.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bias_ray.augmented.finalize import scan_shards
from bias_ray.augmented.store import (
    SHARD_COLUMNS,
    SHARD_ROW_GROUP_ROWS,
    atomic_write_json,
    atomic_write_parquet,
    committed_indices,
    finished_job,
    manifest_is_import,
)
from bias_ray.data.custom import task_data_summary
from bias_ray.generate.engines import ENGINES
from bias_ray.generate.prompts import PromptPlan, make_plan, sampling_params, settings_fingerprint
from bias_ray.generate.quality import clean_generations, drop_reasons
from bias_ray.generate.recovery import check_folder, read_json, set_aside, shard_name
from bias_ray.spec import GenerationSpec, QualitySpec, SweepSpec


class GenerationJobError(RuntimeError):
    """The output folder cannot be resumed by this spec; the message says how to fix it."""


# ---------------------------------------------------------------- Ray Data stages
def _prompt_batch(batch: dict[str, np.ndarray], plan: PromptPlan) -> pa.Table:
    return plan.table(batch["data"])


def _postprocess(batch: pa.Table, engine: str, quality: QualitySpec) -> pa.Table:
    """Clean and filter rows; split failures off via ``engine_error`` (they keep ``generated_text``).

    Arrow in, Arrow out (``batch_format="pyarrow"``): the cleaning and filters run on whole columns.
    Text columns leave as ``large_string``, the type shards written from pandas have.
    """
    n = batch.num_rows

    def column(name: str, kind: pa.DataType, missing: Any, fill_nulls: bool = True) -> pa.ChunkedArray | pa.Array:
        """``name`` as ``kind`` (nulls filled with ``missing`` unless told not to); all ``missing`` if absent."""
        if name not in batch.column_names:
            return pc.fill_null(pa.nulls(n, kind), missing)
        values = pc.cast(batch.column(name), kind, safe=False)
        return pc.fill_null(values, missing) if fill_nulls else values

    engine_error = column("engine_error", pa.string(), "")
    if "__inference_error__" in batch.column_names:  # Ray Data LLM's error column (vLLM should_continue_on_error)
        err = column("__inference_error__", pa.string(), "")
        engine_error = pc.if_else(pc.not_equal(err, ""), pc.binary_join_element_wise("engine error: ", err, ""),
                                  engine_error)
    generated = column("generated_text", pa.string(), "")
    text = clean_generations(generated)
    failed = pc.not_equal(engine_error, "")
    columns = {
        "text": text,
        "generated_tokens": column("generated_tokens", pa.int64(), 0),
        "drop_reason": drop_reasons(text, quality),
        "device": column("device", pa.string(), engine),
        "engine_s": column("engine_s", pa.float64(), 0.0, fill_nulls=False),
        "index": column("index", pa.int64(), 0, fill_nulls=False),
        "engine_error": engine_error,
        # the raw output is kept only where it explains a failure (quarantine); kept rows carry ``text``
        "generated_text": pc.if_else(failed, generated, ""),
    }
    out = [columns[c] if c in columns else batch.column(c) for c in [*SHARD_COLUMNS, "engine_error", "generated_text"]]
    out = [pc.cast(v, pa.large_string()) if pa.types.is_string(v.type) else v for v in out]
    return pa.table(out, names=[*SHARD_COLUMNS, "engine_error", "generated_text"])


# ---------------------------------------------------------------- progress
class _Progress:
    """A rich progress bar with samples/s and tokens/s (off when BIAS_RAY_PROGRESS=0)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.started, self.samples, self.tokens = time.perf_counter(), 0, 0
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("generate"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rates]}"), TimeElapsedColumn(),
                                redirect_stdout=False, redirect_stderr=False)  # library prints: the log file
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
def _job_info(spec: SweepSpec, plan: PromptPlan, by_path: bool = False) -> dict[str, Any]:
    """What ``job.json`` and the manifest say of a job. ``model`` is the reference as the spec gave it
    (for people to read); ``model_identity`` is what the ids hash (a local folder's content digest),
    absent from jobs written before it, whose fingerprint named the folder by its path (``by_path``)."""
    job = {"fingerprint": plan.fingerprint, "requested": plan.total, "engine": spec.generation.engine,
           "model": str(spec.models.generator), "template_id": plan.template["id"],
           "template_version": int(plan.template["version"]), "sampling": sampling_params(spec),
           "bias_types": [b.name for b in spec.bias_type_specs], "stances": spec.generation.stances,
           "samples_per_bias_type": spec.generation.samples_per_bias_type}
    if not by_path:
        job["model_identity"] = plan.generator_identity
    return job


# where the model lies is not a setting: the same model in another folder (a moved checkout,
# another node's mount) continues the same job
WHERE_NOT_WHAT = ("model",)


def _same_job(old: dict[str, Any], job: dict[str, Any]) -> bool:
    return all(old.get(k) == v for k, v in job.items() if k not in WHERE_NOT_WHAT)


def _check_job(out: Path, job: dict[str, Any]) -> None:
    path = out / "job.json"
    if path.exists():
        old = json.loads(path.read_text())
        if not _same_job(old, job):
            changed = sorted(k for k in job if k not in WHERE_NOT_WHAT and k in old and old[k] != job[k])
            raise GenerationJobError(
                f"{out} holds a generation job with other settings (changed: {', '.join(changed)}); "
                "delete that folder to start over, or set another output_dir"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, job)


def _plan_and_job(spec: SweepSpec, out: Path) -> tuple[PromptPlan, dict[str, Any]]:
    """The plan and job info for ``out``: content-named ids, or, for a job there written before ids
    named the generator (and a task data file) by content, that job's own ids: the same as now for a
    hub id or a served model, else the path-named ones (:func:`settings_fingerprint` ``by_path``)."""
    plan = _plan(spec)
    path = out / "job.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    if old and "model_identity" not in old:
        for earlier in (plan, replace(plan, fingerprint=settings_fingerprint(spec, plan.template, by_path=True))):
            if old.get("fingerprint") == earlier.fingerprint:
                return earlier, _job_info(spec, earlier, by_path=True)
    return plan, _job_info(spec, plan)  # a job written before with other settings: _check_job says which


def _plan(spec: SweepSpec) -> PromptPlan:
    return make_plan(spec)


def block_size(gen: GenerationSpec) -> int:
    """Prompts per Ray Data block: whole engine batches, up to four, not more than a shard."""
    return gen.batch_size * max(1, min(gen.shard_rows, 4 * gen.batch_size) // gen.batch_size)


def _stream(spec: SweepSpec, plan: PromptPlan, todo: np.ndarray, out: Path, done: int, progress: bool) -> dict:
    """Generate the prompts ``todo`` and commit each batch as a shard; returns this run's counters."""
    import ray

    from bias_ray.runtime import init_ray

    init_ray()
    gen = spec.generation
    # blocks of whole engine batches: every batch is batch_size rows in index order (the last may be
    # short), whatever the block count, so a job's batches, and with them its per-batch seeds, are fixed
    block_rows = block_size(gen)
    ds = ray.data.from_numpy([todo[i:i + block_rows] for i in range(0, len(todo), block_rows)])
    # its own tasks (not fused into the engine's actors), so prompts are built while the engine generates
    ds = ds.map_batches(_prompt_batch, fn_kwargs={"plan": plan}, batch_size=None, batch_format="numpy", num_cpus=0.5)
    ds = ENGINES.get(gen.engine)().apply(ds, spec)
    # 0.5 CPU as the prompt stage: after a task-based engine (null) all three fuse into one task per block
    ds = ds.map_batches(
        _postprocess, batch_format="pyarrow", batch_size=None, num_cpus=0.5,
        fn_kwargs={"engine": gen.engine, "quality": gen.quality},
    )
    (out / "shards").mkdir(parents=True, exist_ok=True)
    (out / "quarantine").mkdir(parents=True, exist_ok=True)
    run_tag = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    bar = _Progress(plan.total, done, progress)
    stats = {"prompts": 0, "generated_tokens": 0, "quarantined": 0, "shards": 0}
    started = time.perf_counter()
    def arrived(block: pa.Table) -> None:  # progress as each block reaches the driver, before its shard
        stats.setdefault("first_batch_s", time.perf_counter() - started)
        stats.setdefault("first_batch_prompts", block.num_rows)
        bar.update(block.num_rows, int(pc.sum(block.column("generated_tokens")).as_py() or 0))

    try:
        blocks = ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)
        for seq, batch in enumerate(_in_shards(blocks, gen.shard_rows, arrived)):
            failed = pc.not_equal(batch.column("engine_error"), "")
            n_failed = int(pc.sum(failed).as_py() or 0)
            if n_failed:  # quarantine first: a crash in between regenerates only the good rows
                bad = batch.filter(failed).rename_columns(
                    ["reason" if c == "engine_error" else c for c in batch.column_names])
                atomic_write_parquet(bad.select(["sample_id", "index", "reason", "bias_type", "group", "stance",
                                                  "generated_text"]),
                                      out / "quarantine" / shard_name(run_tag, seq, bad.num_rows))
            good = (batch.filter(pc.invert(failed)) if n_failed else batch).drop_columns(["engine_error",
                                                                                          "generated_text"])
            if good.num_rows:
                atomic_write_parquet(good, out / "shards" / shard_name(run_tag, seq, good.num_rows),
                                      SHARD_ROW_GROUP_ROWS)
            tokens = int(pc.sum(batch.column("generated_tokens")).as_py() or 0)
            stats["prompts"] += batch.num_rows
            stats["generated_tokens"] += tokens
            stats["quarantined"] += n_failed
            stats["shards"] += 1
            stats.setdefault("first_shard_s", time.perf_counter() - started)
            stats.setdefault("first_shard_prompts", batch.num_rows)
            stats["last_shard_s"] = time.perf_counter() - started
    finally:
        bar.close()
    stats["wall_s"] = time.perf_counter() - started
    return stats


def _in_shards(blocks: Iterable[pa.Table], shard_rows: int, arrived: Callable[[pa.Table], None]) -> Iterator[pa.Table]:
    """The job's output blocks regrouped into shards of ``shard_rows`` rows (the last may be short);
    ``arrived(block)`` is called as each block comes in. Empty blocks (whose schema Ray Data may
    leave out) are skipped."""
    pending, buffered = [], 0
    for block in blocks:
        if not block.num_rows:
            continue
        arrived(block)
        pending.append(block)
        buffered += block.num_rows
        while buffered >= shard_rows:
            table = pa.concat_tables(pending)
            yield table.slice(0, shard_rows)
            rest = table.slice(shard_rows)
            pending, buffered = ([rest] if rest.num_rows else []), rest.num_rows
    if buffered:
        yield pa.concat_tables(pending)


def _finalize(spec: SweepSpec, plan: PromptPlan, job: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Check completeness, drop exact duplicates, write the manifest (last, atomically).

    The counting, duplicates and row directory are the store's (:mod:`bias_ray.augmented.finalize`,
    streaming: one shard in memory at a time); this adds the job's settings and the last run's throughput.
    """
    out = spec.augmented_dir
    scan = scan_shards(out, plan.total)
    if not scan.complete:
        raise GenerationJobError(f"{out}: {scan.missing} requested samples missing and {scan.repeated} repeated after "
                                 "the run; rerun `bias-ray generate` to resume (this should not happen: please "
                                 "report it)")
    run_tokens, run_wall = run.get("generated_tokens", 0), run.get("wall_s", 0.0)
    manifest = {
        **job,
        "status": "complete",
        **scan.commit(out, spec.generation.quality.dedup),
        "last_run": {
            "prompts": run.get("prompts", 0),
            "generated_tokens": run_tokens,
            "wall_s": round(run_wall, 3),
            "samples_per_s": round(run.get("prompts", 0) / run_wall, 3) if run_wall else 0.0,
            "tokens_per_s": round(run_tokens / run_wall, 3) if run_wall else 0.0,
            "resumed_from": run.get("resumed_from", 0),
            "first_batch_s": round(run.get("first_batch_s", 0.0), 3),  # start-up: Ray Data plan, actors, model load
            "first_batch_prompts": run.get("first_batch_prompts", 0),
            "first_shard_s": round(run.get("first_shard_s", 0.0), 3),
            "first_shard_prompts": run.get("first_shard_prompts", 0),
            "last_shard_s": round(run.get("last_shard_s", 0.0), 3),
        },
    }
    if (task_data := task_data_summary(spec.data)) is not None:
        manifest["task_data"] = task_data  # the user's rows, and any that data.skip_bad_rows left out
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def measure_generation(spec: SweepSpec, classifier: Any = None) -> list[dict[str, Any]]:
    """What the generator wrote, per (bias type, group, stance), added to a finished job's manifest.

    A step after the job, not part of it: it reads the kept rows back and embeds up to
    ``generation.measure_rows`` a cell with the stance classifier, driver-side CPU work that neither
    holds the engines nor delays the job's completion (see :mod:`bias_ray.generate.measure`). Computed once: a manifest
    that has ``generator_measures`` is left as it is. The manifest is rewritten atomically.
    ``classifier``: see :func:`~bias_ray.generate.measure.generator_measures`.
    """
    from bias_ray.generate.measure import generator_measures

    out = spec.augmented_dir
    manifest = finished_job(out)
    if "generator_measures" not in manifest:
        manifest["generator_measures"] = generator_measures(spec, out, classifier)  # names the group? hateful?
        atomic_write_json(out / "manifest.json", manifest)
    return manifest["generator_measures"]


def _log_wandb(spec: SweepSpec, manifest: dict[str, Any]) -> None:
    """Throughput and quality counts to W&B (never the spec's endpoint headers or keys)."""
    from bias_ray.tracking import start_run, wandb_mode

    mode = wandb_mode(spec.tracking.wandb)
    if mode == "disabled":
        return
    flat = {k: v for k, v in manifest.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    flat.update({f"last_run/{k}": v for k, v in manifest["last_run"].items()})
    flat.update({f"dropped/{k}": v for k, v in manifest["dropped"].items()})
    config = {"engine": manifest["engine"], "model": manifest["model"], "sampling": manifest["sampling"],
              "template": f"{manifest['template_id']}@v{manifest['template_version']}"}
    run = start_run(mode, spec.wandb_dir, spec.tracking.project, f"{spec.name}-generate", "generate", config=config)
    run.summary.update(flat)
    run.finish()


def generate(spec: SweepSpec, progress: bool | None = None) -> Path:
    """Write the augmented data for every bias type of the spec under ``spec.augmented_dir``; resumable."""
    out = spec.augmented_dir
    manifest_path = out / "manifest.json"
    # a broken file is moved aside with its reason, never read (bias_ray/generate/recovery.py)
    job_lost = (out / "job.json").exists() and read_json(out / "job.json", out) is None
    manifest = read_json(manifest_path, out) or {}
    if job_lost and manifest:
        set_aside(manifest_path, out, "job.json was unreadable, so the manifest's job cannot be vouched for")
        manifest = {}
    if manifest_is_import(manifest, out):
        return out  # rows made elsewhere (bias_ray.generate.imported) stand in for this job: no generator needed
    plan, job = _plan_and_job(spec, out)
    _check_job(out, job)  # other settings stop here, before any file is judged by this plan
    finished = manifest.get("status") == "complete" and _same_job(manifest, job)
    moved = check_folder(out, plan.total, deep=False) if finished else 0  # footers only: no column read
    if finished and not moved:
        return out  # finished with these very settings: nothing to do
    moved += check_folder(out, plan.total, plan if job_lost else None)
    if moved and manifest:
        set_aside(manifest_path, out, "files it counted were broken and set aside; the finalize rebuilds it")
    for stale in out.glob("*/.part-*.tmp-*"):  # half-written files of a killed run
        stale.unlink(missing_ok=True)
    done = committed_indices(out, plan.total)
    todo = np.flatnonzero(~done).astype(np.int64)
    run: dict[str, Any] = {"resumed_from": int(done.sum())}
    if len(todo):
        if progress is None:
            progress = os.environ.get("BIAS_RAY_PROGRESS", "1") == "1"
        run.update(_stream(spec, plan, todo, out, int(done.sum()), progress))
    manifest = _finalize(spec, plan, job, run)
    _log_wandb(spec, manifest)
    return out

