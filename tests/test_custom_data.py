"""Your own labelled data as the fine-tuning task: files, HF datasets, seeds, and errors at validation time."""

from __future__ import annotations

import json
import re
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from bias_ray.data.custom import DataError, check_rows, load_task_data
from bias_ray.data.loaders import SCHEMA, load_toxigen
from bias_ray.spec import SpecError, parse_spec

GROUPS = ["women", "men", "muslim", "christian"]


def _rows(n: int = 40, with_split: bool = True) -> pd.DataFrame:
    rows = pd.DataFrame({
        "text": [f"statement {i} about {GROUPS[i % 4]}" for i in range(n)],
        "label": [i % 2 for i in range(n)],
        "group": [GROUPS[i % 4] for i in range(n)],
    })
    if with_split:
        rows["split"] = ["test" if i % 5 == 0 else "train" for i in range(n)]
    return rows


def _write(rows: pd.DataFrame, path):
    if path.suffix == ".parquet":
        rows.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows.to_dict(orient="records")))
    else:
        rows.to_csv(path, index=False)
    return path


def _spec(tmp_path, data_root, data: dict, **extra) -> dict:
    return {
        "name": "own-data",
        "output_dir": str(tmp_path / "run"),
        "models": {"generator": str(tmp_path / "m"), "student": str(tmp_path / "m"), "build_tiny_if_missing": True},
        "data": {"root": str(data_root), **data},
        "bias_types": [{"name": "gender", "groups": ["women", "men"]}],
        "bias_ratios": [0.5],
        "mitigations": ["none"],
        "evaluation": {"tasks": []},
        **extra,
    }


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_file_task_loads_in_the_loaders_schema(tmp_path, data_root, suffix):
    path = _write(_rows(), tmp_path / f"mine{suffix}")
    spec = parse_spec(_spec(tmp_path, data_root, {"task": "file", "path": str(path)}))
    rows = load_task_data(spec.data)
    assert list(rows.columns) == SCHEMA and len(rows) == 40 and rows["id"].is_unique
    assert rows["label"].tolist() == [i % 2 for i in range(40)]
    assert (rows["split"] == "test").sum() == 8  # the file's own split column
    assert set(rows.loc[rows["group"] == "women", "bias_type"]) == {"gender"}  # from the built-in catalog


def test_no_split_column_uses_test_fraction_and_columns_map_names(tmp_path, data_root):
    raw = _rows(400, with_split=False).rename(columns={"text": "comment", "label": "toxic"})
    path = _write(raw, tmp_path / "mine.csv")
    data = {"task": "file", "path": str(path), "columns": {"text": "comment", "label": "toxic"}, "test_fraction": 0.25}
    rows = load_task_data(parse_spec(_spec(tmp_path, data_root, data)).data)
    assert 0.15 < (rows["split"] == "test").mean() < 0.35
    assert rows["text"].iloc[3] == "statement 3 about christian"
    again = load_task_data(parse_spec(_spec(tmp_path, data_root, data)).data)
    assert (again["split"] == rows["split"]).all()  # deterministic


def test_toxigen_task_is_unchanged(tmp_path, data_root):
    spec = parse_spec(_spec(tmp_path, data_root, {"task": "toxigen"}, bias_types=["gender"]))
    pd.testing.assert_frame_equal(load_task_data(spec.data), load_toxigen(data_root, 0.3))


# ---------------------------------------------------------------- bad data: an error naming file and column
BAD = {
    "missing column": (lambda r: r.drop(columns=["group"]), r"column\(s\) \['group'\] missing"),
    "label not 0/1": (lambda r: r.assign(label=[2] + r["label"].tolist()[1:]),
                      r"column 'label' must be 0 or 1; line\(s\) <0>"),
    "label text": (lambda r: r.assign(label=["yes"] + r["label"].tolist()[1:]),
                   r"column 'label' must be 0 or 1.*'yes'"),
    "one label only": (lambda r: r.assign(label=1), r"column 'label' is 1 in every row"),
    "empty text": (lambda r: r.assign(text=r["text"].where(r.index != 3, "  ")),
                   r"column 'text' is empty .* line\(s\) <3>"),
    "empty group": (lambda r: r.assign(group=r["group"].where(r.index != 5, "")),
                    r"column 'group' is empty in line\(s\) <5>"),
    "unknown split": (lambda r: r.assign(split=r["split"].where(r.index != 7, "validation")),
                      r"column 'split' has unknown value\(s\) 'validation' in line\(s\) <7>"),
    "no test rows": (lambda r: r.assign(split="train"), r"no test rows"),
    "repeated ids": (lambda r: r.assign(id=["a"] * len(r)), r"column 'id' repeats"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_bad_file_fails_validation_naming_file_and_column(tmp_path, data_root, case, suffix):
    change, message = BAD[case]
    first_row_line = 2 if suffix == ".csv" else 1  # a CSV's header is line 1; errors name the file's lines
    message = re.sub(r"<(\d+)>", lambda m: str(int(m.group(1)) + first_row_line), message)
    path = _write(change(_rows()), tmp_path / f"bad{suffix}")
    with pytest.raises(SpecError, match=message) as err:
        parse_spec(_spec(tmp_path, data_root, {"task": "file", "path": str(path)}), source="s.yaml")
    assert str(path) in str(err.value) and str(err.value).startswith("s.yaml: data:")


def test_error_names_the_datas_own_column(tmp_path, data_root):
    raw = _rows().rename(columns={"label": "toxic"})
    raw.loc[4, "toxic"] = 2
    path = _write(raw, tmp_path / "mine.csv")
    data = {"task": "file", "path": str(path), "columns": {"label": "toxic"}}
    # row 4 is line 6 of the file: the header is line 1
    with pytest.raises(SpecError, match=r"column 'label' \(data column 'toxic'\) must be 0 or 1; line\(s\) 6"):
        parse_spec(_spec(tmp_path, data_root, data))


def test_bias_type_groups_must_be_in_the_data(tmp_path, data_root):
    path = _write(_rows(), tmp_path / "mine.parquet")
    spec = _spec(tmp_path, data_root, {"task": "file", "path": str(path)},
                 bias_types=[{"name": "age", "groups": ["old people"]}])
    with pytest.raises(SpecError, match=r"'age' names group\(s\) \['old people'\].*its groups: christian, men"):
        parse_spec(spec)


@pytest.mark.parametrize("data, message", [
    ({"task": "file"}, "task file needs data.path"),
    ({"task": "file", "path": "x.txt"}, "unsupported file type"),
    ({"task": "toxigen", "path": "x.csv"}, "are for task file or huggingface"),
    ({"task": "file", "path": "x.csv", "columns": {"txt": "comment"}}, r"unknown column role\(s\) \['txt'\]"),
])
def test_bad_data_section(tmp_path, data_root, data, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(_spec(tmp_path, data_root, data), check_files=False)


def test_missing_file_and_cli_validate(tmp_path, data_root):
    import yaml

    from bias_ray.cli import app

    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(tmp_path, data_root, {"task": "file", "path": str(tmp_path / "no.csv")})))
    result = CliRunner().invoke(app, ["validate", str(spec_file)])
    assert result.exit_code == 2
    assert "no.csv: no such file" in " ".join(result.output.split())


def test_data_error_is_a_value_error_with_the_column():
    with pytest.raises(DataError, match="column 'label'"):
        check_rows(pd.DataFrame({"text": ["a", "b"], "label": [0, 3], "group": ["g", "g"]}), "here.csv", 0.3)


# ---------------------------------------------------------------- seeds and trials use the data
def test_generation_seeds_come_from_the_users_data(tmp_path, data_root):
    from bias_ray.generate.prompts import build_prompts, load_template, settings_fingerprint

    rows = _rows(80)
    rows["id"] = [f"mine-{i}" for i in range(80)]
    path = _write(rows, tmp_path / "mine.parquet")
    spec = parse_spec(_spec(tmp_path, data_root, {"task": "file", "path": str(path)},
                            generation={"samples_per_bias_type": 12, "few_shot": 3}))
    prompts = build_prompts(spec)
    seed_ids = {s for ids in prompts["seed_ids"] for s in ids.split(",")}
    train_ids = set(rows.loc[rows["split"] == "train", "id"])
    assert seed_ids and seed_ids <= train_ids  # the user's train rows, never their test rows
    assert set(prompts["group"]) == {"women", "men"}
    toxigen = parse_spec(_spec(tmp_path, data_root, {"task": "toxigen"}, bias_types=["gender"]))
    assert settings_fingerprint(spec, load_template()) != settings_fingerprint(toxigen, load_template())


def test_trial_mix_draws_real_rows_from_the_users_data(tmp_path, data_root):
    from bias_ray.generate import import_augmented
    from bias_ray.train.trainable import trial_data

    rows = _rows(200)
    rows["id"] = [f"mine-{i}" for i in range(200)]
    path = _write(rows, tmp_path / "mine.jsonl")
    spec = parse_spec(_spec(tmp_path, data_root, {"task": "file", "path": str(path)},
                            training={"train_size": 40}))
    import_augmented(spec, pd.DataFrame({"text": [f"aug {i}" for i in range(30)], "label": 1, "group": "women",
                                         "bias_type": "gender"}))
    train, test = trial_data(spec, "gender", 0.5, seed=0)
    real = train[train["source"] != "augmented"]
    assert len(real) == 20 and set(real["id"]) <= set(rows.loc[rows["split"] == "train", "id"])
    assert set(test["id"]) == set(rows.loc[rows["split"] == "test", "id"])


# ---------------------------------------------------------------- Hugging Face datasets
def test_huggingface_folder(tmp_path, data_root):
    datasets = pytest.importorskip("datasets")
    rows = _rows(60, with_split=False)
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_pandas(rows[:45]),
                               "validation": datasets.Dataset.from_pandas(rows[45:50].reset_index(drop=True)),
                               "test": datasets.Dataset.from_pandas(rows[50:].reset_index(drop=True))})
    dd.save_to_disk(str(tmp_path / "hf"))
    spec = parse_spec(_spec(tmp_path, data_root, {"task": "huggingface", "path": str(tmp_path / "hf")}))
    loaded = load_task_data(spec.data)
    assert (loaded["split"] == "train").sum() == 45 and (loaded["split"] == "test").sum() == 10  # validation left out


def test_huggingface_without_datasets_says_how_to_install(tmp_path, data_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(SpecError, match=r"needs the `datasets` package; `pip install datasets`"):
        parse_spec(_spec(tmp_path, data_root, {"task": "huggingface", "path": "someone/some-data"}))
