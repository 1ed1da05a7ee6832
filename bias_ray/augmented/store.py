"""The store of augmented data: its on-disk format, atomic writes, the row directory, the manifest.

The contract between the stages: generation (:mod:`bias_ray.generate.pipeline`) and import
(:mod:`bias_ray.generate.imported`) write through this module and close a job with
:mod:`bias_ray.augmented.finalize`; mix, train and analysis read through :mod:`bias_ray.augmented.read`.
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

Crash safety: the driver is the only writer and every file appears by an atomic rename
(:func:`atomic_write_json`, :func:`atomic_write_parquet`, :func:`commit_file`), so after a
``kill -9`` each shard is either whole or absent. A rerun reads the sample ids already committed
(:func:`committed_ids`, :func:`committed_indices`: shards + quarantine) and generates only the others.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bias_ray.files import fsync_dir, write_json

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


# ---------------------------------------------------------------- files
def atomic_write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` to ``path`` as JSON (sorted keys), atomically."""
    write_json(path, obj, sort_keys=True)


def commit_file(tmp: Path, dest: Path) -> None:
    """Make a fully written temporary file ``dest`` atomically (flushed to disk first)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def absent_from(sorted_values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Per ``index`` value: not in ``sorted_values`` (sorted int64; a binary search each)."""
    if not len(sorted_values):
        return np.ones(len(index), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_values, index), len(sorted_values) - 1)
    return sorted_values[at] != index


def atomic_write_parquet(frame: pd.DataFrame | pa.Table, path: Path, row_group_rows: int | None = None) -> None:
    """Write ``frame`` to ``path`` as Parquet (row groups of ``row_group_rows``), atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    # min/max statistics where readers prune by them; a long text's would bloat every footer
    stats = [c for c in table.column_names if c not in UNSTATS_COLUMNS]
    pq.write_table(table, tmp, row_group_size=row_group_rows, write_statistics=stats)
    commit_file(tmp, path)


def part_files(folder: Path) -> list[Path]:
    """The ``part-*.parquet`` files of ``folder`` (shards or quarantine), sorted; none if it is absent."""
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def committed_ids(out: Path) -> set[str]:
    """Sample ids whose outcome is on disk (generated or quarantined): a rerun skips them."""
    ids: set[str] = set()
    for folder in (out / "shards", out / "quarantine"):
        for p in part_files(folder):
            ids.update(pq.read_table(p, columns=["sample_id"]).column("sample_id").to_pylist())
    return ids


def committed_indices(out: Path, total: int) -> np.ndarray:
    """A mask over prompt indices whose outcome is on disk: a rerun skips them.

    Within a job (same settings fingerprint, checked by the generation job's ``_check_job``) the prompt index names the
    sample as the sample id does, at a bit per prompt instead of a string.
    """
    done = np.zeros(total, dtype=bool)
    for folder in (out / "shards", out / "quarantine"):
        for p in part_files(folder):
            index = pq.read_table(p, columns=["index"]).column("index").to_numpy()
            done[index[(index >= 0) & (index < total)]] = True
    return done


# ---------------------------------------------------------------- the row directory
class RowDirectory:
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
                    rows = rows.filter(pa.array(absent_from(duplicate_index, rows.column("index").to_numpy())))
                rows = pa.table({
                    "index": rows.column("index"),
                    "bias_type": pa.array(np.full(rows.num_rows, bias_type, dtype=object), pa.string()),
                    "label": pc.cast(rows.column("label"), pa.int64()),
                    "group": pc.cast(rows.column("group"), pa.string()),
                    "part": rows.column("part"), "row_group": rows.column("row_group"),
                }, schema=schema)
                writer.write_table(rows, row_group_size=ROW_DIRECTORY_ROW_GROUP_ROWS)
        commit_file(tmp, dest)


# ---------------------------------------------------------------- the manifest
def is_imported(out: Path) -> bool:
    """Whether ``out`` holds a finished import of rows made elsewhere (no generation job behind it)."""
    manifest = out / "manifest.json"
    return manifest.is_file() and manifest_is_import(json.loads(manifest.read_text()), out)


def manifest_is_import(manifest: dict[str, Any], out: Path) -> bool:
    """Whether ``manifest`` (read from ``out``) is that of a finished import."""
    # imports before the flag wrote no job.json
    return manifest.get("status") == "complete" and (bool(manifest.get("imported")) or not (out / "job.json").exists())


def finished_job(out: Path) -> dict[str, Any]:
    """The manifest of the finished job (generated or imported) under ``out``; FileNotFoundError if none."""
    manifest = out / "manifest.json"
    info = json.loads(manifest.read_text()) if manifest.exists() else {}
    if info.get("status") != "complete":
        raise FileNotFoundError(f"no finished generation under {out}; run `bias-ray generate SPEC` first")
    return info
