"""The store's finalize: once every requested sample has an outcome on disk, count, drop exact
duplicates and index the kept rows, for a generation job and an import alike.

Streams: one shard in memory at a time, plus a bit per prompt, 8 bytes per kept row (text
hashes) and the row directory's ~28 bytes per kept row (:class:`~bias_ray.augmented.store.RowDirectory`).
Duplicates keep the smallest sample id of each text, so the result does not depend on the order
the shards finished; :func:`stream_duplicates` writes them to ``duplicates.parquet``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bias_ray.augmented.store import ROW_DIRECTORY, RowDirectory, commit_file, part_files


# ---------------------------------------------------------------- exact duplicates
def find_duplicates(rows: pd.DataFrame) -> pd.DataFrame:
    """``sample_id, duplicate_of`` for kept rows whose text repeats an earlier (smaller id) kept row."""
    kept = rows.loc[rows["drop_reason"] == "", ["sample_id", "text"]].sort_values(["text", "sample_id"])
    first = kept.groupby("text", sort=False)["sample_id"].transform("first")
    dup = kept[kept["sample_id"] != first]
    return pd.DataFrame({"sample_id": dup["sample_id"].to_numpy(), "duplicate_of": first[dup.index].to_numpy()})


def text_hashes(texts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """64-bit hashes of texts (pandas' SipHash): equal texts hash equal; a collision only costs a re-check."""
    return pd.util.hash_array(np.asarray(texts.to_numpy(zero_copy_only=False), dtype=object), categorize=False)


def stream_duplicates(parts: list[Path], hashes: list[np.ndarray], dest: Path,
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
    commit_file(tmp, dest)
    return np.concatenate(written) if written else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------- the shards, counted
class ShardTotals:
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
        self.kept_hashes.append(text_hashes(pc.filter(table.column("text"), kept)))


@dataclass
class ShardScan:
    """Every shard and quarantine file of a store, counted (:func:`scan_shards`); nothing written yet."""

    total: int
    parts: list[Path]
    totals: ShardTotals
    directory: RowDirectory
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def missing(self) -> int:
        """Requested samples with no outcome on disk."""
        return int((~self.totals.seen).sum())

    @property
    def repeated(self) -> int:
        """Outcomes on disk beyond one per requested sample (repeats and indices outside the plan)."""
        return self.totals.repeated + self.totals.out_of_range

    @property
    def complete(self) -> bool:
        """Exactly one outcome (a shard row or a quarantine row) per requested sample."""
        return not (self.missing or self.repeated) and self.totals.rows + self.quarantined == self.total

    def commit(self, out: Path, dedup: bool) -> dict[str, Any]:
        """Write ``duplicates.parquet`` (with ``dedup``) and the row directory; return the manifest's counts."""
        dup_index = stream_duplicates(self.parts if dedup else [], self.totals.kept_hashes if dedup else [],
                                      out / "duplicates.parquet")
        self.totals.kept_hashes = []
        self.directory.write(out / ROW_DIRECTORY, dup_index)
        dropped = dict(self.totals.drops)
        if len(dup_index):
            dropped["duplicate"] = len(dup_index)
        return {
            "rows": int(self.totals.rows - sum(dropped.values())),
            "prompts": self.total,
            "generated": int(self.totals.rows),
            "dropped": {k: int(v) for k, v in sorted(dropped.items())},
            "quarantined": int(self.quarantined),
            "quarantine_reasons": {k: int(v) for k, v in sorted(self.quarantine_reasons.items())},
            "generated_tokens": int(self.totals.tokens),
            "engine_seconds": round(self.totals.engine_s, 3),
            "gpu_seconds": round(self.totals.gpu_s, 3),
            "devices": sorted(self.totals.devices),
            "shards": len(self.parts),
        }


def scan_shards(out: Path, total: int) -> ShardScan:
    """Count the shards and quarantine of the store ``out`` for a plan of ``total`` samples."""
    parts = part_files(out / "shards")
    scan = ShardScan(total, parts, ShardTotals(total), RowDirectory())
    for part in parts:
        shard = pq.ParquetFile(part)
        table = shard.read(columns=["index", "text", "drop_reason", "generated_tokens", "engine_s", "device",
                                    "label", "group", "bias_type"])
        scan.totals.add_shard(table)
        scan.directory.add_shard(table, part, shard.metadata)
        shard.close()
    for part in part_files(out / "quarantine"):
        table = pq.read_table(part, columns=["index", "reason"])
        scan.totals.mark(table.column("index").to_numpy())
        scan.quarantined += table.num_rows
        # "malformed response (...): ..." / "engine error: ..." -> counted by the part before the details
        for reason in table.column("reason").to_pylist():
            key = re.split(r"[:(]", str(reason), maxsplit=1)[0].strip()
            scan.quarantine_reasons[key] = scan.quarantine_reasons.get(key, 0) + 1
    return scan
