"""Augmented rows made elsewhere, from files: streamed into a generated job's layout, bad input named."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from bias_ray.augmented import ROW_DIRECTORY, augmented_strata, is_imported, load_augmented
from bias_ray.cli import app
from bias_ray.generate import imported
from bias_ray.generate.imported import ImportRowsError, import_augmented
from bias_ray.generate.pipeline import generate
from bias_ray.spec import parse_spec
from bias_ray.train.trainable import trial_data
from tests.conftest import micro_spec_dict

GROUPS = {"religion": ["muslim", "jewish"], "gender": ["women", "lgbtq"]}


def _spec(tmp_path: Path, data_root: Path, name: str = "run", **overrides):
    d = micro_spec_dict(tmp_path / name, tmp_path / "no-model", data_root, bias_types=list(GROUPS), **overrides)
    return parse_spec(d, check_files=False)


def _rows(n: int) -> pd.DataFrame:
    bias = ["religion" if i % 3 else "gender" for i in range(n)]
    group = [GROUPS[b][i % 2] for i, b in enumerate(bias)]
    return pd.DataFrame({"text": [f"augmented statement {i} about {g}" for i, g in enumerate(group)],
                         "label": [i % 2 for i in range(n)], "group": group, "bias_type": bias,
                         "score": [i / n for i in range(n)]})


def _as_files(rows: pd.DataFrame, folder: Path) -> list[Path]:
    """The rows in four files of three formats, a folder of two Parquet files among them, in row order."""
    (folder / "parquet").mkdir(parents=True)
    cut = [0, len(rows) // 5, 2 * len(rows) // 5, 3 * len(rows) // 5, len(rows)]
    rows.iloc[cut[0]:cut[1]].to_parquet(folder / "parquet" / "a.parquet", index=False)
    rows.iloc[cut[1]:cut[2]].to_parquet(folder / "parquet" / "b.parquet", index=False)
    rows.iloc[cut[2]:cut[3]].to_json(folder / "c.jsonl", orient="records", lines=True)
    rows.iloc[cut[3]:cut[4]].to_csv(folder / "d.csv", index=False)
    return [folder / "parquet", folder / "c.jsonl", folder / "d.csv"]


def test_files_import_as_the_same_rows_in_a_frame(tmp_path, data_root, monkeypatch):
    """Batches straddle files and shards: the layout, ids and directory equal the frame's import."""
    monkeypatch.setattr(imported, "READ_BATCH_ROWS", 37)
    rows = _rows(500)
    from_files = import_augmented(_spec(tmp_path, data_root, "files"), _as_files(rows, tmp_path / "in"),
                                  shard_rows=120)
    from_frame = import_augmented(_spec(tmp_path, data_root, "frame"), rows, shard_rows=120)
    assert len(list((from_files / "shards").glob("part-imported-*.parquet"))) == 5
    for name in ("shards/part-imported-000003.parquet", ROW_DIRECTORY):
        a, b = pq.read_table(from_files / name), pq.read_table(from_frame / name)
        assert a.drop_columns(["score"] if "score" in a.column_names else []).equals(
            b.drop_columns(["score"] if "score" in b.column_names else []))
    got = load_augmented(_spec(tmp_path, data_root, "files"))
    assert got["text"].tolist() == rows["text"].tolist() and got["label"].tolist() == rows["label"].tolist()
    assert got["score"].tolist() == pytest.approx(rows["score"].tolist())  # other columns ride along
    assert set(got["stance"]) == {"unknown"} and got["id"].is_unique
    manifest = json.loads((from_files / "manifest.json").read_text())
    assert manifest["imported"] and manifest["rows"] == 500 and len(manifest["sources"]) == 4
    assert imported.imported_counts(from_files) == {"religion": 333, "gender": 167}


def test_a_run_uses_an_imported_set_instead_of_generating(tmp_path, data_root):
    spec = _spec(tmp_path, data_root, training={"train_size": 40})
    rows = _rows(300).assign(id=[f"mine-{i}" for i in range(300)], stance="biased")
    import_augmented(spec, _as_files(rows, tmp_path / "in"))
    assert is_imported(spec.augmented_dir)
    before = (spec.augmented_dir / "manifest.json").read_text()
    assert generate(spec) == spec.augmented_dir  # no model needed, nothing rewritten
    assert (spec.augmented_dir / "manifest.json").read_text() == before
    assert not (spec.augmented_dir / "job.json").exists()
    train, _ = trial_data(spec, "religion", 0.5, seed=0)
    aug = train[train["is_augmented"]]
    assert len(aug) == 20 and set(aug["id"]) <= set(rows["id"]) and set(aug["bias_type"]) == {"religion"}


def _leaves_nothing(spec) -> None:
    out = spec.augmented_dir
    assert not (out / "manifest.json").exists() and not list((out / "shards").glob("*"))
    assert not (out / ROW_DIRECTORY).exists()


def test_bad_files_are_named_and_leave_nothing_behind(tmp_path, data_root, monkeypatch):
    monkeypatch.setattr(imported, "READ_BATCH_ROWS", 16)
    spec = _spec(tmp_path, data_root)
    rows = _rows(60)
    with pytest.raises(FileNotFoundError, match="nowhere.parquet does not exist"):
        import_augmented(spec, [tmp_path / "nowhere.parquet"])
    (tmp_path / "rows.txt").write_text("a text\n")
    with pytest.raises(ImportRowsError, match=r"unknown format '\.txt'"):
        import_augmented(spec, [tmp_path / "rows.txt"])
    rows.drop(columns=["group"]).to_parquet(tmp_path / "nogroup.parquet")
    with pytest.raises(ImportRowsError, match=r"nogroup.parquet lacks columns \['group'\]"):
        import_augmented(spec, [tmp_path / "nogroup.parquet"])

    # a row without a label in the second file: named by its number over all files, and its file
    rows.iloc[:30].to_json(tmp_path / "one.jsonl", orient="records", lines=True)
    second = rows.iloc[30:].astype({"label": object})
    second.iloc[7, second.columns.get_loc("label")] = None
    second.to_json(tmp_path / "two.jsonl", orient="records", lines=True)
    named = r"rows \[37\] \(rows \[7\] of .*two.jsonl; counting from 0\) lack a text"
    with pytest.raises(ImportRowsError, match=named):
        import_augmented(spec, [tmp_path / "one.jsonl", tmp_path / "two.jsonl"], shard_rows=10)
    _leaves_nothing(spec)  # the shards of the first file's rows went with the error

    rows.iloc[:30].assign(id="same").iloc[:2].to_csv(tmp_path / "ids.csv", index=False)
    with pytest.raises(ImportRowsError, match=r"repeat ids \['same'\]"):
        import_augmented(spec, [tmp_path / "ids.csv"])
    _leaves_nothing(spec)
    rows.iloc[30:].assign(score="high").to_csv(tmp_path / "score.csv", index=False)
    with pytest.raises(ImportRowsError, match=r"score.csv: its columns differ from the first rows'"):
        import_augmented(spec, [tmp_path / "one.jsonl", tmp_path / "score.csv"])
    rows.assign(label=0.5).to_parquet(tmp_path / "half.parquet")
    with pytest.raises(ImportRowsError, match="label must be an integer class"):
        import_augmented(spec, [tmp_path / "half.parquet"])
    rows.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(ImportRowsError, match="no augmented rows to import in .*empty.parquet"):
        import_augmented(spec, [tmp_path / "empty.parquet"])
    _leaves_nothing(spec)
    import_augmented(spec, [tmp_path / "one.jsonl"])  # the folder is usable after every failure
    assert len(load_augmented(spec)) == 30


def test_the_import_command(tmp_path, data_root):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")  # a stand-in model folder: nothing loads it
    spec = {"name": "imp", "output_dir": str(tmp_path / "run"), "data": {"root": str(data_root)},
            "models": {"generator": str(tmp_path / "model"), "student": str(tmp_path / "model")},
            "bias_types": ["religion", "race"], "bias_ratios": [0.5], "mitigations": ["none"]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    _as_files(_rows(90), tmp_path / "in")
    runner = CliRunner()
    missing = runner.invoke(app, ["import", str(tmp_path / "spec.yaml"), str(tmp_path / "none.csv")])
    assert missing.exit_code == 2 and "none.csv does not exist" in missing.output
    result = runner.invoke(app, ["import", str(tmp_path / "spec.yaml"), str(tmp_path / "in")])
    assert result.exit_code == 0, result.output
    assert "imported 90 rows" in result.output and "religion 60" in result.output and "gender 30" in result.output
    assert "no imported rows for the spec's bias types ['race']" in result.output
    assert "no trial reads their rows: ['gender']" in result.output
    again = runner.invoke(app, ["import", str(tmp_path / "spec.yaml"), str(tmp_path / "in")])
    assert again.exit_code == 2 and "already holds augmented data (an import)" in again.output


def test_uris_and_compressed_text_files(tmp_path, data_root):
    """A folder behind a URI (file:// here; s3:// and gs:// go through the same pyarrow.fs calls)."""
    rows = _rows(120)
    (tmp_path / "bucket" / "run-1").mkdir(parents=True)
    rows.iloc[:50].to_json(tmp_path / "bucket" / "run-1" / "a.jsonl.gz", orient="records", lines=True,
                           compression="gzip")
    rows.iloc[50:].to_csv(tmp_path / "bucket" / "run-1" / "b.csv.bz2", index=False, compression="bz2")
    (tmp_path / "bucket" / "run-1" / "_SUCCESS").write_text("")  # a job's marker files are not data
    spec = _spec(tmp_path, data_root)
    out = import_augmented(spec, f"file://{tmp_path}/bucket/")
    assert load_augmented(spec)["text"].tolist() == rows["text"].tolist()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"] == [f"file://{tmp_path}/bucket/run-1/a.jsonl.gz",
                                   f"file://{tmp_path}/bucket/run-1/b.csv.bz2"]
    with pytest.raises(ImportRowsError, match="nosuch://bucket/x: cannot open this URI"):
        import_augmented(_spec(tmp_path, data_root, "other"), "nosuch://bucket/x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty holds no .parquet"):
        import_augmented(_spec(tmp_path, data_root, "other"), f"file://{tmp_path}/empty")


def test_filter_drops_rows_as_a_generated_job_does(tmp_path, data_root):
    """--filter: the spec's quality filters and exact-duplicate removal; dropped rows are never drawn."""
    rows = _rows(200).assign(id=[f"r{i}" for i in range(200)])
    rows.loc[3, "text"] = "   "
    rows.loc[10, "text"] = "I'm sorry, but I can't write that."
    rows.loc[20, "text"] = "x" * 3000  # over quality.max_chars (2000)
    rows.loc[150, "text"] = rows.loc[40, "text"]  # an exact repeat, in another shard and file
    rows.loc[[3, 10, 20, 40, 150], "bias_type"] = "religion"
    files = _as_files(rows, tmp_path / "in")
    spec = _spec(tmp_path, data_root)
    out = import_augmented(spec, files, shard_rows=64, filter_rows=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dropped"] == {"empty": 1, "refusal": 1, "too_long": 1} and manifest["duplicates"] == 1
    assert manifest["kept"] == 196 and manifest["filters"]["max_chars"] == 2000
    kept = load_augmented(spec)
    # of a repeat the smallest sample id stays, as in a generated job ("r150" < "r40")
    assert set(rows["id"]) - set(kept["id"]) == {"r3", "r10", "r20", "r40"}
    assert imported.imported_counts(out)["religion"] == (rows["bias_type"] == "religion").sum() - 4
    strata = augmented_strata(spec, "religion")
    assert not {3, 10, 20, 40} & set(strata["index"]) and 150 in set(strata["index"])
    plain = _spec(tmp_path, data_root, "plain")
    with pytest.raises(ImportRowsError, match=r"rows \[3\] .* lack a text"):  # unfiltered, an empty text is refused
        import_augmented(plain, files)
    nulls = rows.astype({"text": object})
    nulls.loc[5, "text"] = None
    filtered = import_augmented(_spec(tmp_path, data_root, "nulls"), nulls, filter_rows=True)
    assert json.loads((filtered / "manifest.json").read_text())["dropped"]["empty"] == 2  # filtered: dropped
    import_augmented(plain, rows.drop(index=3))
    assert len(load_augmented(plain)) == 199  # as given: the refusal, the long text and the repeat stay


def test_columns_under_other_names_and_constants(tmp_path, data_root):
    """Ray Data LLM's output (generated_text, the prompt's own text column) and a file per bias type."""
    from bias_ray.generate.imported import ColumnMap

    rows = _rows(60)
    religion = rows[rows["bias_type"] == "religion"].drop(columns=["bias_type"])
    theirs = religion.rename(columns={"text": "generated_text", "group": "target_group"}).assign(text="the prompt")
    theirs.to_parquet(tmp_path / "religion.parquet", index=False)
    spec = _spec(tmp_path, data_root)
    columns = ColumnMap(renames={"text": "generated_text", "group": "target_group"},
                        constants={"bias_type": "religion", "stance": "biased"})
    out = import_augmented(spec, tmp_path / "religion.parquet", columns=columns)
    got = load_augmented(spec)
    assert got["text"].tolist() == religion["text"].tolist()  # the renamed column replaced the prompt's
    assert got["group"].tolist() == religion["group"].tolist() and set(got["bias_type"]) == {"religion"}
    assert set(got["stance"]) == {"biased"} and "target_group" not in got and "generated_text" not in got
    assert json.loads((out / "manifest.json").read_text())["column_map"]["constants"]["bias_type"] == "religion"

    other = _spec(tmp_path, data_root, "other")
    with pytest.raises(ImportRowsError, match=r"lacks columns \['bias_type'\].*--column OURS=THEIRS or --set"):
        import_augmented(other, tmp_path / "religion.parquet", columns=ColumnMap(renames=columns.renames))
    with pytest.raises(ImportRowsError, match=r"has no columns \['output'\] to rename"):
        import_augmented(other, tmp_path / "religion.parquet", columns=ColumnMap(renames={"text": "output"}))
    with pytest.raises(ImportRowsError, match=r"has columns \['label'\] already"):
        import_augmented(other, tmp_path / "religion.parquet", columns=ColumnMap(
            renames=columns.renames, constants={"bias_type": "religion", "label": "1"}))

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "cols", "output_dir": str(tmp_path / "cli"), "data": {"root": str(data_root)},
        "models": {"generator": str(tmp_path / "model"), "student": str(tmp_path / "model")},
        "bias_types": ["religion"], "bias_ratios": [0.5], "mitigations": ["none"]}))
    runner = CliRunner()
    bad = runner.invoke(app, ["import", str(spec_file), str(tmp_path / "religion.parquet"), "--set", "bias_type"])
    assert bad.exit_code == 2 and "--set takes NAME=VALUE" in bad.output
    result = runner.invoke(app, ["import", str(spec_file), str(tmp_path / "religion.parquet"),
                                 "--column", "text=generated_text", "--column", "group=target_group",
                                 "--set", "bias_type=religion"])
    assert result.exit_code == 0, result.output
    assert f"imported {len(religion)} rows" in result.output and f"religion {len(religion)}" in result.output
