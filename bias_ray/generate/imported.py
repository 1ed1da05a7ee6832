"""Augmented data made elsewhere, laid out as a finished generation job: streamed, whatever its size.

A user who generated millions of samples with their own vLLM job (or holds a planted set for a
study) brings them as a pandas frame, a pyarrow table, or files: Parquet, JSON Lines (``.jsonl``,
``.json``) or CSV (the text formats may be compressed), or folders of them, local or behind a URI
that ``pyarrow.fs`` opens (``s3://``, ``gs://``, ``hdfs://``; credentials from the environment).
Each row needs ``text``, ``label`` (an integer class), ``group`` and ``bias_type``; ``id`` is kept
as the sample id when given (else a hash of source, text, group and bias type), ``stance`` is
kept when given (else ``unknown``), other columns ride along.

The rows are read in batches and written as a generated job's shards (``part-imported-*``, small
row groups), the row directory and the manifest, last, in the store's format
(:mod:`bias_ray.augmented.store`). Memory holds one shard, the reader's
buffers and about 36 bytes a row (an id hash and the row directory): 10M rows from Parquet
files import in 35-44 s and +738-762 MiB (``bench/trial_data.py --imported-rows N --import-from
parquet``). An import cut short, or one that found bad rows, leaves no manifest; the next import
into the folder starts over.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.fs as pafs
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from bias_ray.augmented.finalize import stream_duplicates, text_hashes
from bias_ray.augmented.store import (
    ROW_DIRECTORY,
    SHARD_ROW_GROUP_ROWS,
    RowDirectory,
    atomic_write_json,
    atomic_write_parquet,
    is_imported,
    part_files,
)
from bias_ray.data.loaders import stable_id
from bias_ray.generate.quality import drop_reasons
from bias_ray.spec import QualitySpec, SweepSpec

# shards named apart from a generation job's, sized like a large job's
IMPORT_PART_PREFIX = "part-imported-"
IMPORT_SHARD_ROWS = 50_000
REQUIRED = ("text", "label", "group", "bias_type")
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "json", ".json": "json", ".ndjson": "json",
           ".csv": "csv"}
COMPRESSED = {".gz", ".bz2", ".zst", ".lz4"}
READ_BATCH_ROWS = 16_384
PARQUET_BUFFER_BYTES = 1 << 20
TEXT_BLOCK_BYTES = 4 << 20  # CSV / JSON Lines: about 16k rows of 200-character texts a block
UNKNOWN_STANCE = "unknown"

Rows = pd.DataFrame | pa.Table | str | Path | Sequence[str | Path]


class ImportRowsError(ValueError):
    """The rows cannot be imported as given; the message names the rows or files and the fix."""


@dataclass(frozen=True)
class ColumnMap:
    """Where the required columns are in the user's rows: ``renames`` (ours -> theirs, e.g. ``text``
    -> ``generated_text``, Ray Data LLM's output column) and ``constants`` (a value for every row, e.g.
    ``bias_type`` of a file per bias type). A renamed column replaces one of its new name."""

    renames: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)

    def check(self, names: Sequence[str], where: str) -> None:
        """Refuse, before any row is read, columns that are missing or given twice."""
        both = sorted(set(self.renames) & set(self.constants))
        if both:
            raise ImportRowsError(f"{both} are both renamed and set to a constant; give each one way")
        unknown = sorted(theirs for theirs in self.renames.values() if theirs not in names)
        if unknown:
            raise ImportRowsError(f"{where} has no columns {unknown} to rename (it has {list(names)})")
        clash = sorted(c for c in self.constants if c in names and c not in self.renames.values())
        if clash:
            raise ImportRowsError(f"{where} has columns {clash} already; drop them from the constants (--set) or "
                                  "rename them")
        have = set(names) | set(self.renames) | set(self.constants)
        missing = [c for c in REQUIRED if c not in have]
        if missing:
            hint = "; map them with --column OURS=THEIRS or --set NAME=VALUE" if len(missing) < len(REQUIRED) else ""
            raise ImportRowsError(f"{where} lacks columns {missing} (it has {list(names)}); augmented rows need "
                                  f"{list(REQUIRED)}{hint}")

    def apply(self, table: pa.Table) -> pa.Table:
        if not self.renames and not self.constants:
            return table
        theirs = {v: k for k, v in self.renames.items()}
        kept = [c for c in table.column_names if c in theirs or c not in self.renames]
        table = table.select(kept).rename_columns([theirs.get(c, c) for c in kept])
        for name, value in self.constants.items():
            table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
        return table


NO_MAP = ColumnMap()


# ---------------------------------------------------------------- sources
@dataclass(frozen=True)
class SourceFile:
    """One file to import: its filesystem (local, or S3/GCS/HDFS through pyarrow.fs), path and format."""

    fs: pafs.FileSystem
    path: str
    name: str  # as the user wrote it: a local path or a URI
    format: str

    def open(self):
        """A streaming reader of the file's record batches, and its column names (before any row is read).

        Parquet is read through a buffered stream (``pre_buffer=False``), so memory follows the
        batch, not the file's row groups (pandas writes row groups of a million rows); CSV and
        JSON Lines (compressed too: ``.gz``, ``.bz2``, ``.zst``) through Arrow's block readers,
        types inferred from the first block.
        """
        if self.format == "parquet":
            reader = pq.ParquetFile(self.fs.open_input_file(self.path), buffer_size=PARQUET_BUFFER_BYTES,
                                    pre_buffer=False)
            return reader.iter_batches(batch_size=READ_BATCH_ROWS), reader.schema_arrow.names
        stream = self.fs.open_input_stream(self.path)  # compression detected from the name
        block = {"block_size": TEXT_BLOCK_BYTES}
        if self.format == "csv":
            reader = pa_csv.open_csv(stream, read_options=pa_csv.ReadOptions(**block))
        else:
            reader = pa_json.open_json(stream, read_options=pa_json.ReadOptions(**block))
        return reader, reader.schema.names

    def parquet_rows(self) -> int:
        return pq.ParquetFile(self.fs.open_input_file(self.path)).metadata.num_rows


def file_format(name: str) -> str | None:
    """``parquet``, ``json`` or ``csv`` from a file name (a compressed text file by its inner suffix)."""
    suffixes = [x.lower() for x in PurePosixPath(name).suffixes]
    if len(suffixes) > 1 and suffixes[-1] in COMPRESSED:
        fmt = FORMATS.get(suffixes[-2])
        return fmt if fmt in ("csv", "json") else None
    return FORMATS.get(suffixes[-1]) if suffixes else None


def source_files(paths: Sequence[str | Path]) -> list[SourceFile]:
    """The files behind ``paths`` (local paths or URIs such as ``s3://bucket/prefix/``): files as given,
    folders searched recursively, in name order, for data files."""
    files: list[SourceFile] = []
    for raw in paths:
        name = str(raw)
        if "://" in name:
            try:
                fs, root = pafs.FileSystem.from_uri(name)
            except (pa.ArrowException, ValueError) as err:
                raise ImportRowsError(f"{name}: cannot open this URI ({err}); check the scheme (s3://, gs://, "
                                      "hdfs://, file://) and the credentials in the environment") from None
        else:
            fs, root = pafs.LocalFileSystem(), str(Path(name).expanduser().resolve())
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.Directory:
            found = sorted((f for f in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                            if f.type == pafs.FileType.File and file_format(f.base_name)
                            and not f.base_name.startswith((".", "_"))), key=lambda f: f.path)
            if not found:
                raise FileNotFoundError(f"{name} holds no .parquet, .jsonl/.json or .csv files to import")
            base = name.rstrip("/")
            files += [SourceFile(fs, f.path, f"{base}/{f.path[len(root):].lstrip('/')}", str(file_format(f.base_name)))
                      for f in found]
        elif info.type == pafs.FileType.File:
            fmt = file_format(info.base_name)
            if fmt is None:
                raise ImportRowsError(f"{name}: unknown format {PurePosixPath(info.base_name).suffix!r}; import "
                                      ".parquet, .jsonl/.json (one JSON object a line) or .csv files (the text ones "
                                      "may be compressed: .gz, .bz2, .zst)")
            files.append(SourceFile(fs, info.path, name, fmt))
        else:
            raise FileNotFoundError(f"{name} does not exist; give files or folders of augmented rows")
    return files


def _file_batches(files: list[SourceFile], columns: ColumnMap) -> Iterator[tuple[str, pa.Table]]:
    """(file name, rows) batches, file by file, in order; nothing is read before it is needed."""
    for source in files:
        try:
            batches, names = source.open()
            columns.check(names, source.name)
            for batch in batches:
                if batch.num_rows:
                    yield source.name, columns.apply(pa.Table.from_batches([batch]))
        except pa.ArrowException as err:
            raise ImportRowsError(f"{source.name} cannot be read as {source.format}: {err}") from None


def _frame_batches(frame: pd.DataFrame, rows: int, columns: ColumnMap) -> Iterator[tuple[str, pa.Table]]:
    """A pandas frame a slice at a time, all slices typed alike: no copy of the whole frame is made."""
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    for start in range(0, len(frame), rows):
        table = pa.Table.from_pandas(frame.iloc[start:start + rows], schema=schema, preserve_index=False)
        yield "the frame", columns.apply(table)


def _table_batches(table: pa.Table, rows: int, columns: ColumnMap) -> Iterator[tuple[str, pa.Table]]:
    for start in range(0, table.num_rows, rows):
        yield "the table", columns.apply(table.slice(start, rows))


def _batches(rows: Rows, columns: ColumnMap) -> tuple[Iterator[tuple[str, pa.Table]], list[str], int | None]:
    """The rows as (origin, table) batches, the sources' names, and the row count when cheap to know."""
    if isinstance(rows, pd.DataFrame):
        columns.check([str(c) for c in rows.columns], "the frame")  # before anything is touched
        return _frame_batches(rows, READ_BATCH_ROWS, columns), ["a pandas frame"], len(rows)
    if isinstance(rows, pa.Table):
        columns.check(rows.column_names, "the table")
        return _table_batches(rows, READ_BATCH_ROWS, columns), ["a pyarrow table"], rows.num_rows
    files = source_files([rows] if isinstance(rows, str | Path) else list(rows))
    total: int | None = None
    if all(f.format == "parquet" for f in files):  # footers only
        total = sum(f.parquet_rows() for f in files)
    return _file_batches(files, columns), [f.name for f in files], total


# ---------------------------------------------------------------- rows
def _rows_named(rows: np.ndarray, first: int, origin: str, origin_first: int) -> str:
    """Rows of a batch as the user finds them: numbers over all the rows read, and within their file."""
    shown = rows[:5]
    more = " ..." if len(rows) > 5 else ""
    return (f"augmented rows {(shown + first).tolist()}{more} (rows {(shown + first - origin_first).tolist()}{more} "
            f"of {origin}; counting from 0)")


BAD_ROW = "bad_row"  # drop_reason of a row import --skip-bad-rows kept out: no text, label, group or bias type
BAD_LABEL = "bad_label"  # ... or a label that is not an integer class


def _normalise(table: pa.Table, origin: str, first: int, source: str, quality: QualitySpec | None,
               origin_first: int = 0, skip_bad: bool = False) -> pa.Table:
    """One batch in the shard layout; ``first`` is the batch's first row number over all the rows read
    (counting from 0), ``origin_first`` that of the first row of its file.

    With ``quality`` each row gets the drop reason the generation filters give its text (a missing
    or empty text is then dropped as ``empty``, not refused); the text is kept as given, not cut to
    its first line as a generated one is.
    """
    text, label, group, bias_type = (table.column(c) for c in REQUIRED)
    text = pc.cast(text, pa.string())
    if quality:
        text, blank = pc.fill_null(text, ""), pc.is_null(label)
    else:
        blank = pc.or_kleene(pc.is_null(text), pc.equal(pc.utf8_trim_whitespace(text), ""))  # null text: True
    bad = pc.or_kleene(blank, pc.or_kleene(pc.is_null(label), pc.or_kleene(pc.is_null(group), pc.is_null(bias_type))))
    if pa.types.is_floating(label.type):
        bad = pc.or_kleene(bad, pc.is_nan(label))
    bad = pc.fill_null(bad, False)
    empty = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
    skipped = np.full(table.num_rows, "", dtype=object)
    if len(empty) and not skip_bad:
        raise ImportRowsError(f"{_rows_named(empty, first, origin, origin_first)} lack a text, label, group or "
                              "bias_type; fill or drop them, or import with --skip-bad-rows (counted in the "
                              "manifest)")
    skipped[empty] = BAD_ROW
    try:
        labels = pc.cast(label, pa.int64())
    except pa.ArrowInvalid:
        if not skip_bad:
            raise ImportRowsError(f"{origin}: label must be an integer class (0/1 for the classification tasks); "
                                  f"found {label.type} values such as {label.slice(0, 3).to_pylist()}; fix them, "
                                  "or import with --skip-bad-rows (counted in the manifest)") from None
        numeric = pd.to_numeric(pd.Series(label.to_pylist(), dtype=object), errors="coerce")
        whole = numeric.notna() & (numeric == numeric.round())
        skipped[np.flatnonzero(~whole.to_numpy() & (skipped == ""))] = BAD_LABEL
        labels = pa.array(numeric.where(whole, -1).astype("int64").to_numpy(), pa.int64())
    if skip_bad and len(empty):  # placeholders in the rows kept out: never drawn (drop_reason), never read as data
        text = pc.fill_null(text, "")
        labels = pc.fill_null(labels, -1)
        group, bias_type = pc.fill_null(pc.cast(group, pa.string()), ""), pc.fill_null(pc.cast(bias_type, pa.string()),
                                                                                     "")
    group, bias_type = (pc.cast(c, pa.string()) for c in (group, bias_type))
    if "id" in table.column_names and table.column("id").null_count == 0:
        ids = pc.cast(table.column("id"), pa.string())
    elif "id" in table.column_names:
        missing = np.flatnonzero(pc.is_null(table.column("id")).to_numpy(zero_copy_only=False))
        raise ImportRowsError(f"{_rows_named(missing, first, origin, origin_first)} have no id while others do; "
                              "give every row an id, or drop the id column to have them made from the texts")
    else:
        ids = pa.array([stable_id(source, t, g, b) for t, g, b in
                        zip(text.to_pylist(), group.to_pylist(), bias_type.to_pylist())], pa.string())
    stance = (pc.fill_null(pc.cast(table.column("stance"), pa.string()), UNKNOWN_STANCE)
              if "stance" in table.column_names else pa.array([UNKNOWN_STANCE] * table.num_rows, pa.string()))
    reasons = drop_reasons(text, quality) if quality else pa.array([""] * table.num_rows, pa.string())
    if skipped.any():  # a bad row's reason first: a filter's says nothing of a row without its fields
        reasons = pa.array(np.where(skipped != "", skipped, np.asarray(reasons.to_pylist(), dtype=object)), pa.string())
    columns = {"sample_id": ids, "index": pa.array(np.arange(first, first + table.num_rows, dtype=np.int64)),
               "text": text, "label": labels, "drop_reason": reasons,
               "group": group, "bias_type": bias_type, "stance": stance}
    rest = {c: table.column(c) for c in table.column_names
            if c not in columns and c not in ("id", "split", "source")}  # a trial sets split and source
    return pa.table(columns | rest)


class _Shards:
    """Rows in, shards of ``shard_rows`` out (atomically, in order), each added to the row directory."""

    def __init__(self, out: Path, shard_rows: int, dedup: bool) -> None:
        self.out, self.shard_rows, self.dedup = out, shard_rows, dedup
        self.pending: list[pa.Table] = []
        self.buffered = self.written = 0
        self.directory = RowDirectory()
        self.id_hashes: list[np.ndarray] = []
        self.kept_text_hashes: list[np.ndarray] = []  # with dedup: per shard, its kept rows' text hashes
        self.dropped: dict[str, int] = {}
        self.schema: pa.Schema | None = None

    def add(self, table: pa.Table, origin: str) -> None:
        if self.schema is None:
            self.schema = table.schema
        elif table.schema != self.schema:
            try:
                table = table.select(self.schema.names).cast(self.schema)
            except (KeyError, pa.ArrowException) as err:
                raise ImportRowsError(f"{origin}: its columns differ from the first rows' ({self.schema.names} as "
                                      f"{[str(t) for t in self.schema.types]}): {err}; give every file the same "
                                      "columns and types") from None
        self.pending.append(table)
        self.buffered += table.num_rows
        while self.buffered >= self.shard_rows:
            self._write(self.shard_rows)

    def close(self) -> None:
        if self.buffered:
            self._write(self.buffered)

    def _write(self, rows: int) -> None:
        table = pa.concat_tables(self.pending).combine_chunks()
        shard, rest = table.slice(0, rows), table.slice(rows)
        self.pending, self.buffered = ([rest] if rest.num_rows else []), rest.num_rows
        part = self.out / "shards" / f"{IMPORT_PART_PREFIX}{self.written:06d}.parquet"
        atomic_write_parquet(shard, part, SHARD_ROW_GROUP_ROWS)
        self.directory.add_shard(shard, part, pq.read_metadata(part))
        self.id_hashes.append(text_hashes(shard.column("sample_id")))
        if self.dedup:
            kept = pc.equal(shard.column("drop_reason"), "")
            self.kept_text_hashes.append(text_hashes(pc.filter(shard.column("text"), kept)))
        for item in pc.value_counts(shard.column("drop_reason")).to_pylist():
            if item["values"]:
                self.dropped[item["values"]] = self.dropped.get(item["values"], 0) + int(item["counts"])
        self.written += 1


def _repeated_ids(out: Path, hashes: list[np.ndarray]) -> list[str]:
    """Sample ids that occur more than once: ids whose 64-bit hash repeats are read back and compared
    exactly, shard by shard. ``hashes`` (one array per shard) is emptied."""
    values = np.concatenate(hashes)
    hashes.clear()
    values.sort()  # in place: one array of 8 bytes a row, no copies
    candidates = np.unique(values[1:][values[1:] == values[:-1]])
    del values
    if not len(candidates):
        return []
    seen: dict[str, int] = {}
    for part in part_files(out / "shards"):
        ids = pq.read_table(part, columns=["sample_id"]).column("sample_id")
        hit = np.isin(text_hashes(ids), candidates)
        if hit.any():
            for sample_id in ids.filter(pa.array(hit)).to_pylist():
                seen[sample_id] = seen.get(sample_id, 0) + 1
    return sorted(i for i, n in seen.items() if n > 1)


# ---------------------------------------------------------------- the import
def import_augmented(spec: SweepSpec, rows: Rows, source: str = "imported", shard_rows: int = IMPORT_SHARD_ROWS,
                     progress: Callable[[int, int | None], None] | None = None, filter_rows: bool = False,
                     columns: ColumnMap = NO_MAP, skip_bad_rows: bool = False) -> Path:
    """Lay out augmented rows made elsewhere as a finished generation job of ``spec``; returns its folder.

    ``rows``: a pandas frame, a pyarrow table, or paths of Parquet / JSON Lines / CSV files or
    folders of them (see the module's docstring for the columns). ``progress(read, total)`` is
    called after each batch (``total``: None where only reading all would tell, JSON and CSV).
    ``filter_rows``: put the rows through the spec's ``generation.quality`` filters, as a
    generated job's are (empty, length, refusal; exact duplicates with ``dedup``): dropped rows
    stay in the shards with their reason, duplicates are listed in ``duplicates.parquet``, and
    neither is drawn by a trial. Off by default: the rows are used as given. ``columns``: where the
    required columns are when the rows name them otherwise (:class:`ColumnMap`). ``skip_bad_rows``: a row
    without text, label, group or bias type, or with a label that is not an integer, is kept out
    (``drop_reason`` ``bad_row`` / ``bad_label``, counted in the manifest's ``dropped``) instead of
    stopping the import; never by default.
    Bad input (a missing column, a row without text or label, repeated ids, files whose columns
    differ) raises :class:`ValueError` naming it, and what was written is removed: the folder
    holds no finished job, and the next import starts over.
    """
    out = spec.augmented_dir
    if (out / "manifest.json").exists():
        held = "an import" if is_imported(out) else "a generation job"
        raise FileExistsError(f"{out} already holds augmented data ({held}); delete that folder to import anew, "
                              "or set another output_dir")
    batches, sources, total = _batches(rows, columns)
    _clear_unfinished_import(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    started, read = time.perf_counter(), 0
    quality = spec.generation.quality if filter_rows else None
    shards = _Shards(out, shard_rows, dedup=bool(quality and quality.dedup))
    origin_first: dict[str, int] = {}
    try:
        for origin, table in batches:
            origin_first.setdefault(origin, read)
            shards.add(_normalise(table, origin, read, source, quality, origin_first[origin], skip_bad_rows), origin)
            read += table.num_rows
            if progress:
                progress(read, total)
        shards.close()
        if not read:
            raise ImportRowsError(f"no augmented rows to import in {', '.join(sources)}")
        repeated = _repeated_ids(out, shards.id_hashes)
        if repeated:
            raise ImportRowsError(f"augmented rows repeat ids {repeated[:5]}{' ...' if len(repeated) > 5 else ''} "
                                  f"({len(repeated)} ids); give each row a unique id (rows without ids get one "
                                  "from source, text, group and bias type, so drop exact repeats)")
        duplicate_index = np.zeros(0, dtype=np.int64)
        if shards.dedup:
            duplicate_index = stream_duplicates(part_files(out / "shards"), shards.kept_text_hashes,
                                                 out / "duplicates.parquet")
        shards.directory.write(out / ROW_DIRECTORY, duplicate_index)
    except BaseException:
        _clear_unfinished_import(out)  # nothing half-made stays behind to be mistaken for data
        raise
    dropped = sum(shards.dropped.values())
    if shards.dropped.get(BAD_ROW) or shards.dropped.get(BAD_LABEL):
        import logging

        logging.getLogger("bias_ray.generate").warning("import: kept out %s bad rows (--skip-bad-rows)",
                                                       {k: v for k, v in shards.dropped.items() if k.startswith("bad")})
    atomic_write_json(out / "manifest.json", {
        "status": "complete", "imported": True, "rows": read, "kept": read - dropped - len(duplicate_index),
        "dropped": shards.dropped, "duplicates": len(duplicate_index),
        "filters": quality.model_dump(mode="json") if quality else None, "engine": source,
        "shards": shards.written, "sources": sources[:20] + ([f"... {len(sources) - 20} more"] if len(sources) > 20
                                                             else []),
        "columns": shards.schema.names if shards.schema else [],
        "column_map": {"renames": columns.renames, "constants": columns.constants},
        "import_s": round(time.perf_counter() - started, 3),
    })
    return out


def imported_counts(out: Path) -> dict[str, int]:
    """Kept rows per bias type of a finished job (from its row directory: one column read)."""
    types = pq.read_table(out / ROW_DIRECTORY, columns=["bias_type"]).column("bias_type")
    return {item["values"]: int(item["counts"]) for item in pc.value_counts(types).to_pylist()}


def _clear_unfinished_import(out: Path) -> None:
    """Remove what an import cut short left (no manifest yet); refuse to touch a generation job's shards."""
    parts = part_files(out / "shards")
    generated = [p.name for p in parts if not p.name.startswith(IMPORT_PART_PREFIX)]
    if generated:
        raise FileExistsError(f"{out} holds an unfinished generation job ({len(generated)} shards); finish it with "
                              "`bias-ray generate`, or delete the folder to import there")
    for part in parts:
        part.unlink()
    for stale in (out / "shards").glob(f".{IMPORT_PART_PREFIX}*.tmp-*") if (out / "shards").is_dir() else ():
        stale.unlink(missing_ok=True)
    (out / ROW_DIRECTORY).unlink(missing_ok=True)
    (out / "duplicates.parquet").unlink(missing_ok=True)
