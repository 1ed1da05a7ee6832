"""What a resume finds broken in a generation folder is moved aside with its reason, never read.

A file can be damaged after it was committed: a disk that filled, a copy cut short, a node that
died while a synced folder was written. Before a job resumes (or is taken as finished), every file
it would read is checked:

- ``job.json`` and ``manifest.json`` must parse as JSON objects;
- each shard (``shards/`` and ``quarantine/``) must open as Parquet (its footer), hold the row count
  its name records (``part-...-n<rows>.parquet``; names from before the count are checked for the
  footer only) and an ``index`` column without nulls; on resume its ``index`` values must lie in the
  plan and, where ``job.json`` could not be trusted, its ``sample_id`` values must be the plan's;
- ``kept_rows.parquet`` and ``duplicates.parquet`` (the finalize's) must open as Parquet.

A broken file goes to ``<folder>/corrupt/`` with a line in ``corrupt/reasons.jsonl`` (and the log).
A broken shard's rows are regenerated; a broken finalize output or manifest is rebuilt by the
finalize; a broken ``job.json`` is written anew once the shards are checked against the plan.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bias_ray.files import put_aside

log = logging.getLogger("bias_ray.generate")
CORRUPT = "corrupt"
ROWS_IN_NAME = re.compile(r"-n(\d+)\.parquet$")
FINALIZE_FILES = ("kept_rows.parquet", "duplicates.parquet")


def shard_name(run_tag: str, seq: int, rows: int) -> str:
    """A shard's file name, recording its row count so a resume can check it."""
    return f"part-{run_tag}-{seq:06d}-n{rows}.parquet"


def set_aside(path: Path, out: Path, reason: str) -> Path:
    """Move ``path`` into ``out/corrupt/`` (a unique name) and record why; returns where it went."""
    rel = path.relative_to(out)
    dest = put_aside(path, out / CORRUPT, rel.as_posix().replace("/", "__"), {"file": str(rel), "reason": reason})
    log.warning("%s: %s; moved to %s, its work is redone", path, reason, dest)
    return dest


def read_json(path: Path, out: Path) -> dict[str, Any] | None:
    """The JSON object at ``path``; None when absent or broken (a broken one is set aside)."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
        if not isinstance(value, dict):
            raise ValueError(f"a {type(value).__name__}, not an object")
        return value
    except (ValueError, UnicodeDecodeError) as err:
        set_aside(path, out, f"not valid JSON ({err})")
        return None


def shard_problem(path: Path, total: int | None = None, deep: bool = True) -> str | None:
    """Why a shard cannot be read as what it says it is, or None. ``deep``: also read its index column
    (a resume does; a finished job's check reads the footer and its row count alone)."""
    try:
        meta = pq.read_metadata(path)
        index = pq.read_table(path, columns=["index"]).column("index") if deep else None
    except Exception as err:  # a torn footer, a truncated page, a file that is not Parquet
        return f"unreadable Parquet ({type(err).__name__}: {str(err)[:200]})"
    recorded = ROWS_IN_NAME.search(path.name)
    if recorded and int(recorded.group(1)) != meta.num_rows:
        return f"holds {meta.num_rows} rows where its name records {recorded.group(1)}"
    if index is None:
        return None
    if index.null_count or len(index) != meta.num_rows:
        return "its index column is incomplete"
    if total is not None:
        values = index.to_numpy()
        if len(values) and (values.min() < 0 or values.max() >= total):
            return f"holds prompt indices outside the job's 0..{total - 1}"
    return None


def check_folder(out: Path, total: int | None = None, plan: Any = None, deep: bool = True) -> int:
    """Set aside every broken shard and finalize output under ``out``; returns how many were.

    ``deep`` off: footers and row counts only (metadata, no column read), for a finished job.

    ``plan`` (a :class:`~bias_ray.generate.prompts.PromptPlan`): also check each shard's sample ids
    against the plan's (used when ``job.json`` was lost, so the settings cannot vouch for the shards).
    """
    moved = 0
    for folder in ("shards", "quarantine"):
        for path in sorted((out / folder).glob("part-*.parquet")) if (out / folder).is_dir() else []:
            reason = shard_problem(path, total, deep)
            if reason is None and plan is not None:
                table = pq.read_table(path, columns=["index", "sample_id"])
                expected = plan.sample_ids(table.column("index").to_numpy().astype(np.int64))
                if expected != table.column("sample_id").to_pylist():
                    reason = "its sample ids are not this job's (job.json was lost, so they were checked)"
            if reason:
                set_aside(path, out, reason)
                moved += 1
    for name in FINALIZE_FILES:
        path = out / name
        if path.exists():
            try:
                pq.read_metadata(path)
            except Exception as err:
                set_aside(path, out, f"unreadable Parquet ({type(err).__name__})")
                moved += 1
    return moved
