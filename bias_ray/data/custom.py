"""The user's own labelled data as the fine-tuning task: a Parquet/JSONL/CSV file or a HF dataset.

Rows need ``text`` (non-empty), ``label`` (0 or 1) and ``group`` (the target group, matched against
the spec's bias-type groups), and optionally ``split`` (``train`` or ``test``; without it a hash
of the row id and ``data.test_fraction`` decide), ``id`` (unique) and ``bias_type``. The spec's
``data.columns`` renames the data's own column names to these. :func:`read_task_data` checks all of
it and raises :class:`DataError` naming the file and the column, so ``bias-ray validate`` rejects
a bad file before any work starts. This module never imports the spec (the spec imports it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from bias_ray.catalog import bias_type_catalog
from bias_ray.data.loaders import SCHEMA, load_toxigen, split_of, stable_id

TASKS = ("toxigen", "file", "huggingface")
COLUMNS = ("text", "label", "group", "split", "id", "bias_type")
REQUIRED = ("text", "label", "group")
SPLITS = ("train", "test")
READERS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".csv": "csv"}
SHOWN = 5  # bad rows listed in an error


class DataError(ValueError):
    """The task data cannot be used; the message names the file, the column and the fix."""


SKIP_HINT = "; or set data.skip_bad_rows: true to leave such rows out (counted in the generation manifest)"
FILE_LINES = "file_lines"  # DataFrame.attrs key: each row's line in its text file (CSV, JSON Lines)
SKIPPED = "skipped_rows"  # DataFrame.attrs key: rows left out by data.skip_bad_rows, per reason


def _rows_shown(index: pd.Index, lines: list[int] | None = None) -> str:
    """The bad rows as a user finds them: lines of a text file, else row numbers counting from 0."""
    more = f" and {len(index) - SHOWN} more" if len(index) > SHOWN else ""
    if lines is not None:
        return f"line(s) {', '.join(str(lines[i]) for i in index[:SHOWN])}{more}"
    return f"row(s) {', '.join(str(i) for i in index[:SHOWN])}{more} (counting from 0)"


def undecodable_lines(path: Path) -> list[int]:
    """Lines (from 1) of a text file that are not UTF-8."""
    bad = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(n)
    return bad


def _read_text_file(path: Path, kind: str, skip_bad: bool) -> pd.DataFrame:
    """A CSV or JSON Lines file; undecodable lines are an error naming them, or left out with ``skip_bad``."""
    import io

    bad = undecodable_lines(path)
    if bad and not skip_bad:
        shown = ", ".join(map(str, bad[:SHOWN])) + (f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else "")
        raise DataError(f"{path}: line(s) {shown} are not UTF-8 text; re-encode the file (e.g. "
                        f"`iconv -f latin1 -t utf-8`){SKIP_HINT}")
    raw = path.read_bytes()
    kept_lines = [n for n, line in enumerate(raw.splitlines(keepends=True), 1)
                  if n not in set(bad) and line.strip()]
    if bad:
        raw = b"".join(line for n, line in enumerate(raw.splitlines(keepends=True), 1) if n not in set(bad))
    if kind == "jsonl":
        frame = pd.read_json(io.BytesIO(raw), lines=True, dtype=False)
        lines = kept_lines
    else:
        frame = pd.read_csv(io.BytesIO(raw), dtype={"text": str, "group": str, "split": str, "id": str},
                            keep_default_na=False, na_values=[""])
        lines = kept_lines[1:]  # after the header
    if len(lines) == len(frame):  # one row a line (no quoted line breaks): errors name file lines
        frame.attrs[FILE_LINES] = lines
    if bad:
        frame.attrs[SKIPPED] = {"undecodable": len(bad)}
    return frame


def read_file(path: Path, skip_bad: bool = False) -> pd.DataFrame:
    """A Parquet, JSONL or CSV file as a DataFrame (strings kept as strings)."""
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; give a .parquet, .jsonl or .csv file")
    if not path.is_file():
        raise DataError(f"{path}: no such file; set data.path to your labelled data file")
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return _read_text_file(path, kind, skip_bad)
    except DataError:
        raise
    except Exception as err:  # the reader's own message says where; we add which file and which format
        raise DataError(f"{path}: cannot read it as {kind}: {err}") from None


def read_hf(name: str, config: str | None, keep_splits: tuple[str, ...] | None = SPLITS,
            field: str = "data.path") -> pd.DataFrame:
    """A Hugging Face dataset (hub id, or a local folder) with its ``train``/``test`` splits as ``split``.

    A folder written by ``save_to_disk`` is loaded as it is; anything else goes through
    ``datasets.load_dataset`` (the hub, or its cache when ``HF_DATASETS_OFFLINE=1``). Splits other
    than train and test (e.g. validation) are left out (``keep_splits=None``: every split is kept).
    """
    try:
        import datasets
    except ImportError:
        raise DataError(f"{field} {name!r}: reading a Hugging Face dataset needs the `datasets` package; "
                        "`pip install datasets` (or `pip install 'bias-ray[hf]'`)") from None
    try:
        folder = Path(name).expanduser()
        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
            loaded = datasets.load_from_disk(str(folder))
        else:
            loaded = datasets.load_dataset(name, config)
    except Exception as err:
        hint = "" if folder.exists() else (
            "; where the hub cannot be reached, save the dataset once where it can "
            f"(`datasets.load_dataset({name!r}).save_to_disk('<folder>')`) and set {field} to that folder")
        raise DataError(f"{field} {name!r}: cannot load the Hugging Face dataset: {err}{hint}") from None
    if isinstance(loaded, datasets.Dataset):
        return loaded.to_pandas()
    if keep_splits is None:
        frames = [loaded[split].to_pandas().assign(split=split) for split in loaded]
        return pd.concat(frames, ignore_index=True)
    kept = [s for s in loaded if s in keep_splits]
    if not kept:
        raise DataError(f"{field} {name!r}: the dataset has splits {sorted(loaded)}, none named train or test")
    frames = []
    for split in kept:
        frame = loaded[split].to_pandas()
        if "split" not in frame:
            frame["split"] = split if len(kept) == len(keep_splits) else None  # only train: test_fraction splits it
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def class_indices(values: pd.Series, labels: list[str], label_names: list[str] | None) -> pd.Series:
    """Each row's class index in ``labels``: -1 for a row of another class, NaN for a label that names none.

    A label is a class name, or an integer ``i`` that ``label_names[i]`` names (Bias in Bios numbers its
    professions). With ``label_names``, a name outside it is no label at all.
    """
    def one(value: Any) -> float:
        if isinstance(value, str) and not value.strip().isdigit():
            name = value.strip()
            if label_names and name not in label_names:
                return float("nan")
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                return float("nan")
            if isinstance(value, bool) or not number.is_integer() or not label_names \
                    or not 0 <= number < len(label_names):
                return float("nan")
            name = label_names[int(number)]
        return float(labels.index(name)) if name in labels else -1.0
    return values.map(one).astype(float)


def read_table(source: str, config: str | None = None, split: str | None = None,
               field: str = "path") -> pd.DataFrame:
    """An evaluation set as a DataFrame: a .parquet/.jsonl/.csv file, or a Hugging Face dataset (hub id or a
    ``save_to_disk`` folder). ``split``: keep the rows of that split where the data has several (a file
    without a ``split`` column is all of it). Errors are :class:`DataError` naming the source and the fix."""
    if Path(source).suffix.lower() in READERS:
        try:
            frame = read_file(Path(source).expanduser())
        except DataError as err:
            raise DataError(f"{field}: {err}") from None
    else:
        frame = read_hf(source, config, keep_splits=None, field=field)
    if split and "split" in frame and frame["split"].notna().any():
        if not (frame["split"] == split).any():
            splits = ", ".join(sorted(map(str, frame["split"].unique())))
            raise DataError(f"{field} {source!r}: no {split!r} rows; its splits: {splits}")
        frame = frame[frame["split"] == split].reset_index(drop=True)
    return frame


def check_rows(raw: pd.DataFrame, where: str, test_fraction: float, columns: dict[str, str] | None = None,
               source: str = "custom", skip_bad: bool = False, labels: list[str] | None = None,
               label_names: list[str] | None = None, group_names: dict[str, str] | None = None) -> pd.DataFrame:
    """Validate raw rows and return them in the loaders' schema (``id, text, label, group, bias_type, split, source``).

    ``columns`` maps our column names to the data's (e.g. ``{"text": "comment"}``). A bad row (an
    empty or non-text ``text``, a label other than 0/1, an empty group, a repeated id) is an error
    naming its file line (row number for Parquet and datasets) and the fix; with ``skip_bad`` such rows
    are left out and counted per reason in ``.attrs["skipped_rows"]`` (never by default).
    ``labels`` (a task of named classes): a label is a class name or an integer ``label_names`` names, and
    becomes its index in ``labels``; rows of other classes are left out (counted as ``other_class``).
    ``group_names`` renames the data's group values (``{"0": "men"}``).
    """
    lines = raw.attrs.get(FILE_LINES)
    skipped: dict[str, int] = dict(raw.attrs.get(SKIPPED, {}))

    def drop(bad: pd.Index, reason: str, message: str) -> None:
        """Rows ``bad`` out (``skip_bad``) or the error; ``df`` and its aligned series shrink together."""
        nonlocal df
        if not len(bad):
            return
        if not skip_bad:
            raise DataError(message + SKIP_HINT)
        skipped[reason] = skipped.get(reason, 0) + len(bad)
        df = df.drop(index=bad)

    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(COLUMNS))
    if unknown:
        raise DataError(f"{where}: data.columns names {unknown}, which bias-ray does not use; "
                        f"map any of {', '.join(COLUMNS)} to your column names")
    renamed = {theirs: ours for ours, theirs in columns.items()}
    for theirs in renamed:
        if theirs not in raw:
            raise DataError(f"{where}: data.columns maps {renamed[theirs]!r} to column {theirs!r}, which the data "
                            f"lacks; its columns: {', '.join(map(str, raw.columns))}")
    df = raw.rename(columns=renamed)

    def col(ours: str) -> str:
        """A column as the error names it: ours, and the data's own name where data.columns maps it."""
        return f"'{ours}' (data column {columns[ours]!r})" if ours in columns else f"'{ours}'"
    missing = [c for c in REQUIRED if c not in df]
    if missing:
        raise DataError(f"{where}: column(s) {missing} missing; the data needs text, label and group columns "
                        f"(has: {', '.join(map(str, raw.columns))}); rename them or map them in data.columns")
    if df.empty:
        raise DataError(f"{where}: the data has no rows")

    bad = df.index[df["text"].isna() | ~df["text"].map(lambda v: isinstance(v, str) and bool(v.strip()))]
    drop(bad, "empty_text", f"{where}: column {col('text')} is empty or not text in {_rows_shown(bad, lines)}; "
         "every row needs a non-empty text")

    if labels:
        label = class_indices(df["label"], labels, label_names)
        bad = df.index[label.isna()]
        values = sorted({repr(v) for v in df.loc[bad[:SHOWN], "label"]})
        named = (f"a class name or an integer that data.label_names names ({len(label_names)} names)" if label_names
                 else f"one of data.labels ({', '.join(labels)}), or an integer with data.label_names set")
        drop(bad, "bad_label", f"{where}: column {col('label')} must be {named}; {_rows_shown(bad, lines)} hold "
             f"{', '.join(values)}")
        label = label.loc[df.index]
        other = df.index[label < 0]
        if len(other):  # not bad rows: the classes the study leaves out (Bias in Bios' 22 other professions)
            skipped["other_class"] = skipped.get("other_class", 0) + len(other)
            df, label = df.drop(index=other), label.drop(index=other)
    else:
        label = pd.to_numeric(df["label"].map(lambda v: int(v) if isinstance(v, bool) else v), errors="coerce")
        bad = df.index[~label.isin([0, 1])]
        values = sorted({repr(v) for v in df.loc[bad[:SHOWN], "label"]})
        drop(bad, "bad_label", f"{where}: column {col('label')} must be 0 or 1; {_rows_shown(bad, lines)} hold "
             f"{', '.join(values)}")
        label = label.loc[df.index]

    bad = df.index[df["group"].isna() | (df["group"].astype(str).str.strip() == "")]
    drop(bad, "empty_group", f"{where}: column {col('group')} is empty in {_rows_shown(bad, lines)}; name the "
         "target group of every row (e.g. women, muslim), as listed in the spec's bias_types")
    label = label.loc[df.index]

    if "id" in df:
        repeated = df["id"].astype(str).duplicated()
        dup = df["id"].astype(str)[repeated].unique()[:SHOWN].tolist()
        drop(df.index[repeated], "duplicate_id", f"{where}: column {col('id')} repeats {dup} (again in "
             f"{_rows_shown(df.index[repeated], lines)}); ids must be unique (or drop the column)")
    if df.empty:
        raise DataError(f"{where}: no row is left after leaving out bad rows ({skipped})")
    text, group = df["text"], df["group"]
    label = label.loc[df.index]
    if labels and label.nunique() < 2:
        raise DataError(f"{where}: column {col('label')} holds {label.nunique()} of data.labels' classes "
                        f"({', '.join(labels)}); a classifier needs two or more: check data.labels (and "
                        "data.label_names) against the data")
    if label.nunique() < 2:
        raise DataError(f"{where}: column {col('label')} is {int(label.iloc[0])} in every row; a classifier needs both "
                        "labels (0 and 1)")

    if "id" in df:
        ids = df["id"].astype(str)
    else:
        ids = pd.Series([stable_id(source, i, t) for i, t in zip(df.index, text)], index=df.index)

    if "split" in df and df["split"].notna().any():
        split = df["split"].astype("string").str.strip().str.lower()
        bad = df.index[split.isna() | ~split.isin(SPLITS)]
        if len(bad):
            values = sorted({repr(v) for v in df.loc[bad, "split"]})[:SHOWN]
            raise DataError(f"{where}: column {col('split')} has unknown value(s) {', '.join(values)} in "
                            f"{_rows_shown(bad, lines)}; allowed: train, test (or drop the column and set "
                            "data.test_fraction)")
        split = split.astype(str)
    else:
        split = ids.map(lambda i: split_of(i, test_fraction))
    for needed in SPLITS:
        if not (split == needed).any():
            raise DataError(f"{where}: no {needed} rows after splitting; give both train and test rows in "
                            "column 'split', or more rows for data.test_fraction")

    groups_to_type: dict[str, str] = {}
    for name, entry in bias_type_catalog().items():
        for g in entry["groups"]:
            groups_to_type.setdefault(g, name)
    group = group.astype(str).str.strip()
    if group_names:
        group = group.map(lambda g: group_names.get(g, g))
    if "bias_type" in df:
        bias_type = df["bias_type"].astype(str)
    else:
        bias_type = group.map(lambda g: groups_to_type.get(g, "other"))
    out = pd.DataFrame({"id": ids.astype(str), "text": text.astype(str), "label": label.astype(int), "group": group,
                        "bias_type": bias_type, "split": split, "source": source},
                       columns=SCHEMA).reset_index(drop=True)
    if skipped:
        out.attrs[SKIPPED] = skipped
    return out


def read_task_data(task: str, *, root: Path | str, path: str | None = None, hf_config: str | None = None,
                   columns: dict[str, str] | None = None, test_fraction: float = 0.3,
                   skip_bad: bool = False, **classes: Any) -> pd.DataFrame:
    """The fine-tuning task's rows (train and test) in the loaders' schema, validated (``skip_bad``, and
    ``classes``: ``labels``, ``label_names`` and ``group_names``, see :func:`check_rows`)."""
    if task == "toxigen":
        return load_toxigen(root, test_fraction)
    if not path:
        raise DataError(f"data.task {task}: set data.path to the data")
    if task == "file":
        file = Path(path).expanduser()
        return check_rows(read_file(file, skip_bad), str(file), test_fraction, columns, source=file.stem,
                          skip_bad=skip_bad, **classes)
    if task == "huggingface":
        return check_rows(read_hf(path, hf_config), f"data.path {path!r}", test_fraction, columns,
                          source=f"hf:{path}", skip_bad=skip_bad, **classes)
    raise DataError(f"unknown data.task {task!r}; allowed: {', '.join(TASKS)}")


def load_task_data(data: Any) -> pd.DataFrame:
    """:func:`read_task_data` for a spec's ``data`` section (a :class:`bias_ray.spec.DataSpec`)."""
    return read_task_data(data.task, root=data.resolved_root, path=data.path, hf_config=data.hf_config,
                          columns=data.columns, test_fraction=data.test_fraction,
                          skip_bad=getattr(data, "skip_bad_rows", False), labels=getattr(data, "labels", None),
                          label_names=getattr(data, "label_names", None),
                          group_names=getattr(data, "group_names", None))


def task_data_summary(data: Any) -> dict[str, Any] | None:
    """For the generation manifest: the user's task data rows, and those ``data.skip_bad_rows`` left out."""
    if data.task == "toxigen":
        return None
    rows = load_task_data(data)
    return {"task": data.task, "path": data.path, "rows": len(rows),
            "skipped_rows": dict(sorted(rows.attrs.get(SKIPPED, {}).items()))}


def data_identity(data: Any, by_path: bool = False) -> str:
    """What names the task data's content, for generation fingerprints: ToxiGen, a hub dataset's name,
    or a file's SHA-256 (its bytes, wherever it lies: the same file in another folder or checkout
    gives the same sample ids). ``by_path``: the identity of jobs written before, which named a
    file by its path, size and mtime; kept so that those jobs resume with their own ids."""
    # the classes and group names re-label the same rows: they name the data too (absent, ids stay as before)
    classes = [x for x in (getattr(data, "labels", None), getattr(data, "label_names", None),
                           sorted((getattr(data, "group_names", None) or {}).items())) if x]
    if data.task == "file":
        path = Path(data.path)
        if by_path:
            stat = path.stat()
            return stable_id("file", data.path, stat.st_size, stat.st_mtime_ns, sorted(data.columns.items()))
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        return stable_id("file-sha256", digest, sorted(data.columns.items()), *classes)
    if data.task == "huggingface":
        return stable_id("huggingface", data.path, data.hf_config, sorted(data.columns.items()), *classes)
    return "toxigen"
