"""The generation job: lazy prompts -> engine (Ray Data, streaming) -> Parquet shards + manifest.

Layout under ``spec.augmented_dir``::

    job.json              what this folder holds (settings fingerprint, requested prompts)
    shards/part-*.parquet generated rows (kept and filtered, with ``drop_reason``), lean: the
                          per-job constants (engine, model, sampling, template id and version)
                          are in job.json and the manifest, not on every row; the cleaned
                          ``text`` only (the raw engine output stays in quarantine rows)
    quarantine/part-*.parquet rows the engine failed on or answered malformed, with ``reason``
    duplicates.parquet    exact-duplicate rows dropped at the end (``sample_id, duplicate_of, index``)
    kept_rows.parquet     the directory of the kept rows (duplicates out): index, bias type, label,
                          group, and where each row lies (shard, row group); sorted by bias type,
                          then index. A trial reads its draw's strata here and then only the row
                          groups of the rows it drew
    manifest.json         written last: counts, drops by reason, throughput; ``status: complete``

Crash safety: the driver is the only writer and every file appears by an atomic rename, so
after a ``kill -9`` each shard is either whole or absent. A rerun reads the sample ids already
committed (shards + quarantine), builds prompts only for the others, and a finished job
(complete manifest, same fingerprint) is left as it is.

Memory does not grow with the job after generation either: the finalize streams the shards one
at a time (counts, text hashes for duplicates), and readers (:func:`load_augmented`,
:func:`augmented_strata`, :func:`augmented_rows`) push bias-type and index filters and a column
projection into pyarrow, so a trial reads its bias type's rows and the columns it uses.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from bias_ray.data.custom import task_data_summary
from bias_ray.files import fsync_dir, write_json
from bias_ray.generate.engines import ENGINES
from bias_ray.generate.prompts import PromptPlan, make_plan, sampling_params, settings_fingerprint
from bias_ray.generate.quality import clean_generations, drop_reasons, find_duplicates
from bias_ray.generate.recovery import check_folder, read_json, set_aside, shard_name
from bias_ray.spec import GenerationSpec, QualitySpec, SweepSpec

AUGMENTED_COLUMNS = ["id", "text", "label", "group", "bias_type", "split", "source"]
SHARD_COLUMNS = ["sample_id", "index", "text", "generated_tokens", "drop_reason", "label", "group", "bias_type",
                 "stance", "seed_ids", "device", "engine_s"]
# a trial decodes the row groups that hold its drawn rows, not whole shards: keep them small
SHARD_ROW_GROUP_ROWS = 1024
UNSTATS_COLUMNS = {"text", "generated_text", "sample_id", "seed_ids", "reason"}
# the kept rows' directory, written by the finalize (before the manifest); jobs finalized earlier lack it
ROW_DIRECTORY = "kept_rows.parquet"
ROW_DIRECTORY_ROW_GROUP_ROWS = 65_536
# per-job constants: stored once (job.json, manifest), put back as columns by a full load_augmented
JOB_CONSTANTS = ["engine", "model", "sampling", "template_id", "template_version"]


class GenerationJobError(RuntimeError):
    """The output folder cannot be resumed by this spec; the message says how to fix it."""


# ---------------------------------------------------------------- files
def _atomic_write_json(path: Path, obj: dict[str, Any]) -> None:
    write_json(path, obj, sort_keys=True)


def _commit(tmp: Path, dest: Path) -> None:
    """Make a fully written temporary file ``dest`` atomically (flushed to disk first)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def _absent_from(sorted_values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Per ``index`` value: not in ``sorted_values`` (sorted int64; a binary search each)."""
    if not len(sorted_values):
        return np.ones(len(index), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_values, index), len(sorted_values) - 1)
    return sorted_values[at] != index


def _atomic_write_parquet(frame: pd.DataFrame | pa.Table, path: Path, row_group_rows: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    # min/max statistics where readers prune by them; a long text's would bloat every footer
    stats = [c for c in table.column_names if c not in UNSTATS_COLUMNS]
    pq.write_table(table, tmp, row_group_size=row_group_rows, write_statistics=stats)
    _commit(tmp, path)


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def committed_ids(out: Path) -> set[str]:
    """Sample ids whose outcome is on disk (generated or quarantined): a rerun skips them."""
    ids: set[str] = set()
    for folder in (out / "shards", out / "quarantine"):
        for p in _parts(folder):
            ids.update(pq.read_table(p, columns=["sample_id"]).column("sample_id").to_pylist())
    return ids


def committed_indices(out: Path, total: int) -> np.ndarray:
    """A mask over prompt indices whose outcome is on disk: a rerun skips them.

    Within a job (same settings fingerprint, checked by ``_check_job``) the prompt index names the
    sample as the sample id does, at a bit per prompt instead of a string.
    """
    done = np.zeros(total, dtype=bool)
    for folder in (out / "shards", out / "quarantine"):
        for p in _parts(folder):
            index = pq.read_table(p, columns=["index"]).column("index").to_numpy()
            done[index[(index >= 0) & (index < total)]] = True
    return done


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
        _atomic_write_json(path, job)


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
                _atomic_write_parquet(bad.select(["sample_id", "index", "reason", "bias_type", "group", "stance",
                                                  "generated_text"]),
                                      out / "quarantine" / shard_name(run_tag, seq, bad.num_rows))
            good = (batch.filter(pc.invert(failed)) if n_failed else batch).drop_columns(["engine_error",
                                                                                          "generated_text"])
            if good.num_rows:
                _atomic_write_parquet(good, out / "shards" / shard_name(run_tag, seq, good.num_rows),
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


class _ShardTotals:
    """Counters over the shards, fed one shard at a time: memory is one shard plus 8 bytes a kept row."""

    def __init__(self, total: int) -> None:
        self.seen = np.zeros(total, dtype=bool)  # prompt index -> has an outcome on disk
        self.repeated = self.out_of_range = self.rows = self.tokens = 0
        self.engine_s = self.gpu_s = 0.0
        self.devices: set[str] = set()
        self.drops: dict[str, int] = {}
        self.kept_hashes: list[np.ndarray] = []

    def mark(self, index: np.ndarray) -> None:
        """Record the prompt indices of one file; count repeats and indices outside the plan."""
        index = np.asarray(index, dtype=np.int64)
        inside = (index >= 0) & (index < len(self.seen))
        self.out_of_range += int((~inside).sum())
        index = index[inside]
        self.repeated += int(self.seen[index].sum()) + int(len(index) - len(np.unique(index)))
        self.seen[index] = True

    def add_shard(self, table: pa.Table) -> None:
        self.mark(table.column("index").to_numpy())
        self.rows += table.num_rows
        self.tokens += int(pc.sum(table.column("generated_tokens")).as_py() or 0)
        engine_s = table.column("engine_s")
        self.engine_s += float(pc.sum(engine_s).as_py() or 0.0)
        device = table.column("device")
        on_gpu = pc.starts_with(device, "cuda")
        self.gpu_s += float(pc.sum(pc.filter(engine_s, on_gpu)).as_py() or 0.0)
        self.devices.update(pc.unique(device).to_pylist())
        reasons = pc.value_counts(table.column("drop_reason")).to_pylist()
        for item in reasons:
            if item["values"]:
                self.drops[item["values"]] = self.drops.get(item["values"], 0) + int(item["counts"])
        kept = pc.equal(table.column("drop_reason"), "")
        self.kept_hashes.append(_text_hashes(pc.filter(table.column("text"), kept)))


class _RowDirectory:
    """``kept_rows.parquet``, fed one shard at a time: per kept row its index, strata and location.

    Memory: about 28 bytes a kept row (index, label, a group code, shard and row-group numbers),
    held per bias type until :meth:`write` sorts each by index and drops the duplicates.
    """

    def __init__(self) -> None:
        self.by_type: dict[str, list[pa.Table]] = {}
        self.parts: list[str] = []

    def add_shard(self, table: pa.Table, part: Path, meta: pq.FileMetaData) -> None:
        """``table``: the shard's rows in file order; ``meta``: its footer (where the row groups end)."""
        group_rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        code = len(self.parts)
        self.parts.append(part.name)
        kept = pc.equal(table.column("drop_reason"), "")
        located = pa.table({
            "index": table.column("index"),
            "label": table.column("label"),
            "group": pc.dictionary_encode(table.column("group")),
            "part": pa.array(np.full(table.num_rows, code, dtype=np.int32)),
            "row_group": pa.array(np.repeat(np.arange(len(group_rows), dtype=np.int32), group_rows)),
        }).filter(kept)
        types = table.column("bias_type").filter(kept)
        for bias_type in pc.unique(types).to_pylist():
            rows = located.filter(pc.equal(types, bias_type))
            self.by_type.setdefault(str(bias_type), []).append(rows)

    def write(self, dest: Path, duplicate_index: np.ndarray) -> None:
        """Atomically write the directory, duplicates out, each bias type's rows in index order."""
        duplicate_index = np.sort(np.asarray(duplicate_index, dtype=np.int64))
        schema = pa.schema([("index", pa.int64()), ("bias_type", pa.string()), ("label", pa.int64()),
                            ("group", pa.string()), ("part", pa.int32()), ("row_group", pa.int32())],
                           metadata={"parts": json.dumps(self.parts)})
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        with pq.ParquetWriter(tmp, schema) as writer:
            for bias_type in sorted(self.by_type):
                rows = pa.concat_tables(self.by_type.pop(bias_type)).unify_dictionaries().combine_chunks()
                rows = rows.take(pc.sort_indices(rows, [("index", "ascending")]))
                if len(duplicate_index):
                    rows = rows.filter(pa.array(_absent_from(duplicate_index, rows.column("index").to_numpy())))
                rows = pa.table({
                    "index": rows.column("index"),
                    "bias_type": pa.array(np.full(rows.num_rows, bias_type, dtype=object), pa.string()),
                    "label": pc.cast(rows.column("label"), pa.int64()),
                    "group": pc.cast(rows.column("group"), pa.string()),
                    "part": rows.column("part"), "row_group": rows.column("row_group"),
                }, schema=schema)
                writer.write_table(rows, row_group_size=ROW_DIRECTORY_ROW_GROUP_ROWS)
        _commit(tmp, dest)


def _text_hashes(texts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """64-bit hashes of texts (pandas' SipHash): equal texts hash equal; a collision only costs a re-check."""
    return pd.util.hash_array(np.asarray(texts.to_numpy(zero_copy_only=False), dtype=object), categorize=False)


def _stream_duplicates(parts: list[Path], hashes: list[np.ndarray], dest: Path,
                       rows_per_pass: int = 1_000_000) -> np.ndarray:
    """Write ``duplicates.parquet`` (atomically) from the shards; returns the duplicates' indices.

    ``hashes[k]`` are the text hashes of shard ``k``'s kept rows, in order. Only kept rows whose
    hash occurs more than once are candidates. They are read back in passes over the shards that
    hold some, each pass taking the candidates of one range of hash values (about
    ``rows_per_pass`` rows), and :func:`find_duplicates` compares their exact texts: the same rows
    are dropped as a whole-job comparison would drop, in memory bounded by a pass.
    """
    values, counts = np.unique(np.concatenate(hashes) if hashes else np.zeros(0, np.uint64), return_counts=True)
    repeated = values[counts > 1]
    del values, counts
    passes = max(1, -(-int(len(repeated) * 2) // rows_per_pass))  # >= 2 rows per repeated hash
    # hash ranges (sorted, exact bounds) holding about equal numbers of candidates
    edges = repeated[np.linspace(0, len(repeated) - 1, passes + 1).astype(np.int64)] if len(repeated) else []
    schema = pa.schema([("sample_id", pa.string()), ("duplicate_of", pa.string()), ("index", pa.int64())])
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    written: list[np.ndarray] = []
    with pq.ParquetWriter(tmp, schema) as writer:
        for k in range(passes if len(repeated) else 0):
            last = k == passes - 1
            wanted = repeated[(repeated >= edges[k]) & ((repeated <= edges[-1]) if last else (repeated < edges[k + 1]))]
            found = []
            for part, part_hashes in zip(parts, hashes):
                hit = np.isin(part_hashes, wanted)
                if hit.any():
                    table = pq.read_table(part, columns=["sample_id", "index", "text", "drop_reason"])
                    table = table.filter(pc.equal(table.column("drop_reason"), "")).filter(pa.array(hit))
                    found.append(table.to_pandas())
            if not found:
                continue
            rows = pd.concat(found, ignore_index=True)
            dups = find_duplicates(rows)
            dups["index"] = dups["sample_id"].map(rows.set_index("sample_id")["index"]).astype(np.int64)
            writer.write_table(pa.Table.from_pandas(dups[["sample_id", "duplicate_of", "index"]], schema=schema,
                                                    preserve_index=False))
            written.append(dups["index"].to_numpy())
    _commit(tmp, dest)
    return np.concatenate(written) if written else np.zeros(0, dtype=np.int64)


def _finalize(spec: SweepSpec, plan: PromptPlan, job: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Check completeness, drop exact duplicates, write the manifest (last, atomically).

    Streams: one shard in memory at a time, plus a bit per prompt, 8 bytes per kept row (text
    hashes) and the row directory's ~28 bytes per kept row (:class:`_RowDirectory`).
    """
    out = spec.augmented_dir
    parts = _parts(out / "shards")
    totals, directory = _ShardTotals(plan.total), _RowDirectory()
    for part in parts:
        shard = pq.ParquetFile(part)
        table = shard.read(columns=["index", "text", "drop_reason", "generated_tokens", "engine_s", "device",
                                    "label", "group", "bias_type"])
        totals.add_shard(table)
        directory.add_shard(table, part, shard.metadata)
        shard.close()
    quarantined, reasons = 0, {}
    for part in _parts(out / "quarantine"):
        table = pq.read_table(part, columns=["index", "reason"])
        totals.mark(table.column("index").to_numpy())
        quarantined += table.num_rows
        # "malformed response (...): ..." / "engine error: ..." -> counted by the part before the details
        for reason in table.column("reason").to_pylist():
            key = re.split(r"[:(]", str(reason), maxsplit=1)[0].strip()
            reasons[key] = reasons.get(key, 0) + 1
    missing = int((~totals.seen).sum())
    repeated = totals.repeated + totals.out_of_range
    if repeated or missing or totals.rows + quarantined != plan.total:
        raise GenerationJobError(f"{out}: {missing} requested samples missing and {repeated} repeated after the run; "
                                 "rerun `bias-ray generate` to resume (this should not happen: please report it)")
    dedup = spec.generation.quality.dedup
    dup_index = _stream_duplicates(parts if dedup else [], totals.kept_hashes if dedup else [],
                                   out / "duplicates.parquet")
    n_dups = len(dup_index)
    totals.kept_hashes = []
    directory.write(out / ROW_DIRECTORY, dup_index)
    dropped = dict(totals.drops)
    if n_dups:
        dropped["duplicate"] = n_dups
    run_tokens, run_wall = run.get("generated_tokens", 0), run.get("wall_s", 0.0)
    manifest = {
        **job,
        "status": "complete",
        "rows": int(totals.rows - sum(dropped.values())),
        "prompts": plan.total,
        "generated": int(totals.rows),
        "dropped": {k: int(v) for k, v in sorted(dropped.items())},
        "quarantined": int(quarantined),
        "quarantine_reasons": {k: int(v) for k, v in sorted(reasons.items())},
        "generated_tokens": int(totals.tokens),
        "engine_seconds": round(totals.engine_s, 3),
        "gpu_seconds": round(totals.gpu_s, 3),
        "devices": sorted(totals.devices),
        "shards": len(parts),
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
    _atomic_write_json(out / "manifest.json", manifest)
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
    manifest = _finished_job(out)
    if "generator_measures" not in manifest:
        manifest["generator_measures"] = generator_measures(spec, out, classifier)  # names the group? hateful?
        _atomic_write_json(out / "manifest.json", manifest)
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
    if _is_import(manifest, out):
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


def is_imported(out: Path) -> bool:
    """Whether ``out`` holds a finished import of rows made elsewhere (no generation job behind it)."""
    manifest = out / "manifest.json"
    return manifest.is_file() and _is_import(json.loads(manifest.read_text()), out)


def _is_import(manifest: dict[str, Any], out: Path) -> bool:
    # imports before the flag wrote no job.json
    return manifest.get("status") == "complete" and (bool(manifest.get("imported")) or not (out / "job.json").exists())


def _finished_job(out: Path) -> dict[str, Any]:
    manifest = out / "manifest.json"
    info = json.loads(manifest.read_text()) if manifest.exists() else {}
    if info.get("status") != "complete":
        raise FileNotFoundError(f"no finished generation under {out}; run `bias-ray generate SPEC` first")
    return info


def _shard_dataset(out: Path) -> pads.Dataset:
    """The job's shards as one pyarrow dataset (opened lazily: nothing is read until a scan)."""
    parts = _parts(out / "shards")
    if not parts:
        return pads.dataset(pa.table({c: pa.array([], pa.string()) for c in ("sample_id", "text")}))
    # the schema of the first shard: an older layout's extra columns are ignored and a lean shard
    # reads them as nulls, so projections of the lean columns read either (no footer read per shard)
    return pads.dataset([str(p) for p in parts], format="parquet")


def _kept_filter(bias_type: str | None = None) -> pc.Expression:
    """Rows that passed the quality filters (of one bias type, if given); duplicates: :class:`_Duplicates`."""
    keep = pc.field("drop_reason") == ""
    if bias_type is not None:
        keep = keep & (pc.field("bias_type") == bias_type)
    return keep


class _Duplicates:
    """The dropped duplicates of a job, to take out of scanned tables.

    Applied to scan results rather than pushed into the scan: a pushed ``is_in`` builds its hash
    set again for every batch, which costs more than the scan at millions of rows.
    """

    def __init__(self, out: Path) -> None:
        path = out / "duplicates.parquet"
        self.key, self.values = "index", np.zeros(0, dtype=np.int64)
        if path.exists():
            if "index" not in pq.read_schema(path).names:  # jobs finalized before: sample ids only
                self.key = "sample_id"
            self.values = pq.read_table(path, columns=[self.key]).column(self.key).to_numpy(zero_copy_only=False)
            if self.key == "index":
                self.values = np.sort(self.values)

    @property
    def columns(self) -> list[str]:
        return [self.key]

    def drop(self, table: pa.Table) -> pa.Table:
        if not len(self.values) or not table.num_rows:
            return table
        if self.key == "index":  # sorted int64: a binary search per row
            return table.filter(pa.array(_absent_from(self.values, table.column("index").to_numpy())))
        return table.filter(pc.invert(pc.is_in(table.column("sample_id"), value_set=pa.array(self.values))))


def _with_provenance(rows: pd.DataFrame, job: dict[str, Any]) -> pd.DataFrame:
    rows["id"] = rows["sample_id"]
    rows["split"] = "train"
    rows["source"] = "augmented"
    for key in JOB_CONSTANTS:  # stored once per job; a full read gives them back as columns
        if key in job and key not in rows:
            value = job[key]
            rows[key] = json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
    rest = [c for c in rows.columns if c not in AUGMENTED_COLUMNS]
    return rows[[c for c in AUGMENTED_COLUMNS if c in rows] + rest]


def load_augmented(spec: SweepSpec, bias_type: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """The kept augmented rows of a finished generation job (filters and duplicates removed), by index.

    ``bias_type`` and ``columns`` are pushed into the read (only that bias type's rows, only those
    shard columns are decoded); without them every kept row and column is read, with the per-job
    constants (engine, model, sampling, template) added back from the manifest.
    """
    out = spec.augmented_dir
    job = _finished_job(out)
    dataset = _shard_dataset(out)
    if columns is not None:
        columns = list(dict.fromkeys(["sample_id", "index", *columns]))
        unknown = sorted(set(columns) - set(dataset.schema.names))
        if unknown:
            raise KeyError(f"augmented shards have no columns {unknown}; they have {dataset.schema.names}")
    dups = _Duplicates(out)
    read = None if columns is None else list(dict.fromkeys([*columns, *dups.columns]))
    table = dups.drop(dataset.to_table(columns=read, filter=_kept_filter(bias_type)))
    rows = table.select(columns).to_pandas() if columns is not None else table.to_pandas()
    return _with_provenance(rows.sort_values("index").reset_index(drop=True), job)


def _read_shard_groups(out: Path, columns: list[str], wanted_group, rows: pc.Expression | None = None,
                       keep: list[str] | None = None, dictionary: tuple[str, ...] = (), finish=None) -> pa.Table:
    """``keep`` (default: all) of ``columns`` of the row groups ``wanted_group(stats, group)`` selects.

    One shard at a time: its footer (row-group statistics) is read, the selected row groups are
    decoded, filtered by ``rows`` and ``finish(table)``, cut to ``keep``, and the footer is let go:
    memory holds the result and one shard. ``stats(group, column)`` gives a row group's
    ``(min, max)`` of a column, or None if unknown. ``dictionary`` columns stay dictionary-encoded.
    """
    tables = []
    for part in _parts(out / "shards"):
        shard = pq.ParquetFile(part, read_dictionary=list(dictionary) or None)
        meta = shard.metadata
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]

        def stats(group: int, column: str, meta=meta, names=names) -> tuple[Any, Any] | None:
            found = meta.row_group(group).column(names.index(column)).statistics
            return (found.min, found.max) if found is not None and found.has_min_max else None

        groups = [g for g in range(meta.num_row_groups) if wanted_group(stats, g)]
        if groups:
            table = shard.read_row_groups(groups, columns=[c for c in columns if c in names])
            table = table.filter(rows) if rows is not None else table
            table = finish(table) if finish is not None else table
            tables.append(table.select([c for c in keep or columns if c in table.column_names]))
        shard.close()
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in keep or columns})
    return pa.concat_tables(tables, promote_options="permissive")


def augmented_strata(spec: SweepSpec, bias_type: str, strata: tuple[str, ...] = ("label", "group")) -> pd.DataFrame:
    """``index`` and the strata columns of one bias type's kept rows, in index order.

    The same rows in the same order as ``load_augmented(spec)`` restricted to the bias type, so a
    seeded draw over them picks what a draw over the full frame picks; the texts are fetched
    afterwards for the drawn rows alone (:func:`augmented_rows`). Read from the job's row
    directory (``kept_rows.parquet``: the type's row groups only); a job finalized before it
    existed is read from its shards, skipping row groups whose ``bias_type`` statistics exclude
    the type (a job writes bias types in index segments).
    """
    out = spec.augmented_dir
    _finished_job(out)
    # strings stay dictionary-encoded (a code per row), and are sorted categoricals in pandas:
    # grouped in the same (lexicographic) order as plain strings, so the seeded draw is the same
    text_strata = tuple(c for c in strata if c not in ("label", "index"))
    directory = out / ROW_DIRECTORY
    if directory.is_file() and set(strata) <= set(pq.read_schema(directory).names):
        table = pq.read_table(directory, columns=["index", *strata], filters=[("bias_type", "==", bias_type)],
                              read_dictionary=list(text_strata) or None)
    else:
        table = _strata_from_shards(out, bias_type, strata, text_strata)
    frame = table.to_pandas()
    for column in text_strata:
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            frame[column] = values.cat.reorder_categories(sorted(values.cat.categories))
    return frame


def _strata_from_shards(out: Path, bias_type: str, strata: tuple[str, ...], text_strata: tuple[str, ...]) -> pa.Table:
    """:func:`augmented_strata`'s rows for a job without a row directory, by index."""
    dups = _Duplicates(out)

    def holds_type(stats, group: int) -> bool:
        bounds = stats(group, "bias_type")
        return bounds is None or bounds[0] <= bias_type <= bounds[1]

    columns = list(dict.fromkeys(["index", *strata, "bias_type", "drop_reason", *dups.columns]))
    table = _read_shard_groups(out, columns, holds_type, _kept_filter(bias_type), keep=["index", *strata],
                               dictionary=text_strata, finish=dups.drop)
    return table.take(pc.sort_indices(table, [("index", "ascending")]))


def augmented_rows(spec: SweepSpec, indices: np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
    """The kept rows with prompt ``indices``, in the order given (an index may repeat).

    Decodes only the row groups that hold a wanted row (shards are written in row groups of
    ``SHARD_ROW_GROUP_ROWS``) and only ``columns`` (default: those a mix uses). The row directory
    says which shards and row groups those are; a job without one has every shard's footer read
    and its row groups chosen by their ``index`` statistics.
    """
    out = spec.augmented_dir
    _finished_job(out)
    indices = np.asarray(indices, dtype=np.int64)
    if columns is None:  # what a mix uses, of what the shards have (imported sets may lack stance)
        parts = _parts(out / "shards")
        present = set(pq.read_schema(parts[0]).names) if parts else set()
        columns = [c for c in ("text", "label", "group", "bias_type", "stance") if c in present]
    columns = list(dict.fromkeys(["sample_id", "index", *columns]))
    if not len(indices):
        return _with_provenance(pd.DataFrame({c: pd.Series(dtype=object) for c in columns}), {})
    wanted = np.unique(indices)
    if (out / ROW_DIRECTORY).is_file():
        table = _rows_by_directory(out, wanted, columns)
    else:
        def may_hold(stats, group: int) -> bool:
            bounds = stats(group, "index")
            if bounds is None:
                return True
            first = np.searchsorted(wanted, bounds[0])
            return bool(first < len(wanted) and wanted[first] <= bounds[1])

        table = _read_shard_groups(out, columns, may_hold, pc.field("index").isin(pa.array(wanted)))
    rows = table.to_pandas().set_index("index", drop=False)
    absent = np.setdiff1d(wanted, rows.index.to_numpy())
    if len(absent):
        raise KeyError(f"{len(absent)} requested indices (e.g. {absent[:3].tolist()}) are not rows of {out}")
    return _with_provenance(rows.loc[indices].reset_index(drop=True), {})


def _rows_by_directory(out: Path, wanted: np.ndarray, columns: list[str]) -> pa.Table:
    """``columns`` of the kept rows whose index is in ``wanted`` (sorted, unique), located by the row
    directory: the directory's row groups are pruned by their index range, then each shard that
    holds a wanted row has just those row groups decoded."""
    path = out / ROW_DIRECTORY
    names = json.loads(pq.read_schema(path).metadata[b"parts"])
    located = pq.read_table(path, columns=["index", "part", "row_group"],
                            filters=[("index", ">=", int(wanted[0])), ("index", "<=", int(wanted[-1]))])
    located = located.filter(pc.is_in(located.column("index"), value_set=pa.array(wanted))).to_pandas()
    wanted_rows = pa.array(wanted)
    tables = []
    for part, groups in located.groupby("part", sort=True)["row_group"]:
        shard = pq.ParquetFile(out / "shards" / names[int(part)])
        table = shard.read_row_groups(sorted(set(groups.tolist())), columns=columns)
        tables.append(table.filter(pc.is_in(table.column("index"), value_set=wanted_rows)))
        shard.close()
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    return pa.concat_tables(tables, promote_options="permissive")


def iter_kept_batches(out: Path, columns: list[str], batch_rows: int = 65_536):
    """The kept rows of a job's shards as pandas batches, streamed (for measures over all of them)."""
    dups = _Duplicates(out)
    read = list(dict.fromkeys([*columns, *dups.columns]))
    scanner = _shard_dataset(out).scanner(columns=read, filter=_kept_filter(), batch_size=batch_rows)
    for batch in scanner.to_batches():
        table = dups.drop(pa.Table.from_batches([batch]))
        if table.num_rows:
            yield table.select(columns).to_pandas()
