"""Readers of the augmented-data store, pruned by column and by row: what mix, train and analysis read.

The readers (:func:`load_augmented`, :func:`augmented_strata`, :func:`augmented_rows`,
:func:`iter_kept_batches`) push bias-type and index filters and a column projection into pyarrow,
so a trial reads its bias type's rows and the columns it uses; the exact duplicates the finalize
dropped (``duplicates.parquet``) are taken out. The layout they read: :mod:`bias_ray.augmented.store`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from bias_ray.augmented.store import JOB_CONSTANTS, ROW_DIRECTORY, absent_from, finished_job, part_files
from bias_ray.spec import SweepSpec

AUGMENTED_COLUMNS = ["id", "text", "label", "group", "bias_type", "split", "source"]


def _shard_dataset(out: Path) -> pads.Dataset:
    """The job's shards as one pyarrow dataset (opened lazily: nothing is read until a scan)."""
    parts = part_files(out / "shards")
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
            return table.filter(pa.array(absent_from(self.values, table.column("index").to_numpy())))
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
    job = finished_job(out)
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
    for part in part_files(out / "shards"):
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
    finished_job(out)
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
    finished_job(out)
    indices = np.asarray(indices, dtype=np.int64)
    if columns is None:  # what a mix uses, of what the shards have (imported sets may lack stance)
        parts = part_files(out / "shards")
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
