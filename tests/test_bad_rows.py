"""Bad rows in a user's data (issue 22): each named by file line with the fix; skipped only when asked, and counted."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bias_ray.data.custom import DataError, read_task_data, task_data_summary
from bias_ray.spec import SpecError, parse_spec
from tests.test_custom_data import _rows, _spec

# line 1 the header; the rows below are lines 2-41, and these lines go bad
UNDECODABLE, EMPTY_TEXT, BAD_LABEL, NO_GROUP, REPEATED_ID = 4, 7, 10, 13, 16


def bad_csv(path) -> None:
    rows = _rows(40)
    rows["id"] = [f"r{i}" for i in range(40)]
    rows.loc[EMPTY_TEXT - 2, "text"] = "   "
    rows.loc[BAD_LABEL - 2, "label"] = 7
    rows.loc[NO_GROUP - 2, "group"] = ""
    rows.loc[REPEATED_ID - 2, "id"] = "r0"
    lines = rows.to_csv(index=False).encode().splitlines(keepends=True)
    lines[UNDECODABLE - 1] = lines[UNDECODABLE - 1].replace(b"statement", b"st\xe9tement")  # latin-1, not UTF-8
    path.write_bytes(b"".join(lines))


def test_each_bad_row_is_named_by_its_line_with_the_fix(tmp_path):
    path = tmp_path / "mine.csv"
    bad_csv(path)
    with pytest.raises(DataError) as err:
        read_task_data("file", root=tmp_path, path=str(path))
    assert f"{path}: line(s) {UNDECODABLE} are not UTF-8 text" in str(err.value)
    assert "iconv" in str(err.value) and "data.skip_bad_rows: true" in str(err.value)
    lines = path.read_bytes().splitlines(keepends=True)
    del lines[UNDECODABLE - 1]
    fixed = tmp_path / "fixed.csv"
    fixed.write_bytes(b"".join(lines))  # the next problem, with lines as the file now has them
    with pytest.raises(DataError, match=rf"column 'text' is empty or not text in line\(s\) {EMPTY_TEXT - 1};"):
        read_task_data("file", root=tmp_path, path=str(fixed))


def test_skipping_bad_rows_is_asked_for_and_counted(tmp_path, data_root):
    path = tmp_path / "mine.csv"
    bad_csv(path)
    rows = read_task_data("file", root=tmp_path, path=str(path), skip_bad=True)
    assert len(rows) == 35 and "r0" in set(rows["id"]) and rows["id"].is_unique
    assert rows.attrs["skipped_rows"] == {"undecodable": 1, "empty_text": 1, "bad_label": 1, "empty_group": 1,
                                          "duplicate_id": 1}
    spec = parse_spec(_spec(tmp_path, data_root, {"task": "file", "path": str(path), "skip_bad_rows": True}))
    summary = task_data_summary(spec.data)
    assert summary["rows"] == 35 and sum(summary["skipped_rows"].values()) == 5
    with pytest.raises(SpecError, match="not UTF-8 text"):  # never by default
        parse_spec(_spec(tmp_path, data_root, {"task": "file", "path": str(path)}))


def test_jsonl_and_parquet_rows_are_named_where_they_are(tmp_path):
    rows = _rows(20)
    rows["label"] = rows["label"].astype(object)
    rows.loc[4, "label"] = "yes"
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows.to_dict(orient="records")))
    with pytest.raises(DataError, match=r"must be 0 or 1; line\(s\) 5 hold 'yes'"):
        read_task_data("file", root=tmp_path, path=str(jsonl))
    parquet = tmp_path / "mine.parquet"
    pd.DataFrame(rows.assign(label=rows["label"].astype(str))).to_parquet(parquet)
    with pytest.raises(DataError, match=r"must be 0 or 1; row\(s\) 4 \(counting from 0\)"):
        read_task_data("file", root=tmp_path, path=str(parquet))


@pytest.mark.timeout(300)
def test_the_generation_manifest_counts_the_skipped_rows(tmp_path, data_root, tiny_model, ray_session):
    from bias_ray.generate import generate

    path = tmp_path / "mine.csv"
    bad_csv(path)
    spec = parse_spec(_spec(tmp_path, data_root, {"task": "file", "path": str(path), "skip_bad_rows": True},
                            models={"generator": str(tiny_model), "student": str(tiny_model)},
                            generation={"samples_per_bias_type": 8, "max_new_tokens": 4, "batch_size": 8}))
    out = generate(spec)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task_data"]["rows"] == 35
    assert manifest["task_data"]["skipped_rows"]["undecodable"] == 1


def test_an_import_names_its_bad_rows_and_skips_them_only_when_asked(tmp_path, data_root):
    from typer.testing import CliRunner

    from bias_ray.cli import app

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")  # nothing loads it
    spec = {"name": "imp", "output_dir": str(tmp_path / "run"), "data": {"root": str(data_root)},
            "models": {"generator": str(tmp_path / "model"), "student": str(tmp_path / "model")},
            "bias_types": ["religion"], "bias_ratios": [0.5], "mitigations": ["none"]}
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    rows = pd.DataFrame({"text": [f"statement {i}" for i in range(10)], "label": [str(i % 2) for i in range(10)],
                         "group": ["muslim"] * 10, "bias_type": ["religion"] * 10})
    rows.loc[3, "text"] = None
    rows.loc[6, "label"] = "maybe"
    rows.to_json(tmp_path / "rows.jsonl", orient="records", lines=True)
    runner = CliRunner()
    refused = runner.invoke(app, ["import", str(tmp_path / "spec.yaml"), str(tmp_path / "rows.jsonl")],
                            env={"COLUMNS": "200"})
    assert refused.exit_code == 2
    text = " ".join(refused.output.split())
    assert "augmented rows [3] (rows [3] of" in text and "--skip-bad-rows" in text
    assert not (tmp_path / "run" / "data" / "augmented" / "manifest.json").exists()
    done = runner.invoke(app, ["import", str(tmp_path / "spec.yaml"), str(tmp_path / "rows.jsonl"),
                               "--skip-bad-rows"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    manifest = json.loads((tmp_path / "run" / "data" / "augmented" / "manifest.json").read_text())
    assert manifest["rows"] == 10 and manifest["kept"] == 8
    assert manifest["dropped"] == {"bad_label": 1, "bad_row": 1}
