"""A task of named classes (issue 24): the paper's Bias in Bios occupation classification.

A small local dataset laid out as ``LabHC/bias_in_bios`` (``hard_text``, ``profession`` 0-27,
``gender`` 0/1; train, test and dev splits, saved with ``save_to_disk``) goes through
``data.task: huggingface``; the augmented rows take the class of the occupation their framing writes
about; the student gets a head of K classes; the trial reports accuracy per gender and the gap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bias_ray.data.custom import DataError, check_rows, class_indices
from bias_ray.measures.metrics import accuracy_gap, per_group_accuracy
from bias_ray.spec import SpecError, parse_spec
from tests.conftest import micro_spec_dict

# LabHC/bias_in_bios' numbering of its 28 professions (its dataset card)
PROFESSIONS = ["accountant", "architect", "attorney", "chiropractor", "comedian", "composer", "dentist", "dietitian",
               "dj", "filmmaker", "interior_designer", "journalist", "model", "nurse", "painter", "paralegal", "pastor",
               "personal_trainer", "photographer", "physician", "poet", "professor", "psychologist", "rapper",
               "software_engineer", "surgeon", "teacher", "yoga_teacher"]
SIX = ["architect", "dentist", "nurse", "painter", "professor", "software_engineer"]
BIOS_DATA = {"task": "huggingface", "columns": {"text": "hard_text", "label": "profession", "group": "gender"},
             "labels": SIX, "label_names": PROFESSIONS, "group_names": {"0": "men", "1": "women"}}


def bios_rows(per_cell: int = 6) -> pd.DataFrame:
    """Biographies of the six occupations and two others (left out), both genders, in the hub's columns."""
    rows = []
    for job in [*SIX, "accountant", "attorney"]:
        for gender, pronoun in ((0, "He"), (1, "She")):
            for i in range(per_cell):
                rows.append({"hard_text": f"{pronoun} works as a {job.replace('_', ' ')} and has done so for {i + 2} "
                                          f"years, known for careful work number {i}.",
                             "profession": PROFESSIONS.index(job), "gender": gender})
    return pd.DataFrame(rows)


def bios_folder(tmp_path) -> str:
    datasets = pytest.importorskip("datasets")
    rows = bios_rows()
    split = np.arange(len(rows)) % 4  # 0, 1: train; 2: test; 3: dev (left out)
    dd = datasets.DatasetDict({name: datasets.Dataset.from_pandas(rows[split == k].reset_index(drop=True))
                               for name, k in (("train", 0), ("test", 2), ("dev", 3))})
    dd["train"] = datasets.concatenate_datasets([dd["train"], datasets.Dataset.from_pandas(
        rows[split == 1].reset_index(drop=True))])
    dd.save_to_disk(str(tmp_path / "bias_in_bios"))
    return str(tmp_path / "bias_in_bios")


def bios_spec(tmp_path, tiny_model, data_root, **overrides):
    d = micro_spec_dict(tmp_path, tiny_model, data_root, data={"root": str(data_root), "path": bios_folder(tmp_path),
                                                                **BIOS_DATA},
                        bias_types=["gender_occupations"], framings=["contextual-single-explicit"], **overrides)
    return d


# ---------------------------------------------------------------- rows


def test_integer_labels_are_named_and_other_classes_left_out():
    values = pd.Series([13, "13", "nurse", 0, 99, "plumber", 2.5, True])
    got = class_indices(values, SIX, PROFESSIONS).tolist()
    assert got[:4] == [2.0, 2.0, 2.0, -1.0]  # nurse three ways; the accountant is another class
    assert all(np.isnan(got[4:]))  # out of range, unnamed, not an integer, a boolean
    raw = bios_rows(2)
    columns = {"text": "hard_text", "label": "profession", "group": "gender"}
    rows = check_rows(raw.assign(split=["train", "test"] * (len(raw) // 2)), "bios", 0.3, columns,
                      labels=SIX, label_names=PROFESSIONS, group_names={"0": "men", "1": "women"})
    assert len(rows) == 6 * 2 * 2 and rows.attrs["skipped_rows"] == {"other_class": 2 * 2 * 2}
    assert set(rows["group"]) == {"men", "women"}
    nurse = rows[rows["text"].str.contains("nurse")]
    assert set(nurse["label"]) == {SIX.index("nurse")}


def test_a_label_that_names_no_class_is_an_error_naming_the_fix():
    raw = bios_rows(1).assign(split=["train", "test"] * 8)
    raw.loc[3, "profession"] = 41
    with pytest.raises(DataError, match=r"must be a class name or an integer that data.label_names names \(28 names\); "
                                        r"row\(s\) 3 .* hold 41"):
        check_rows(raw, "bios", 0.3, {"text": "hard_text", "label": "profession", "group": "gender"},
                   labels=SIX, label_names=PROFESSIONS)


def test_accuracy_per_group_and_its_gap():
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.array([0, 1, 2, 0, 0, 0])
    g = np.array(["men"] * 3 + ["women"] * 3)
    assert per_group_accuracy(y, p, g) == {"men": 1.0, "women": pytest.approx(1 / 3)}
    assert accuracy_gap(y, p, g) == pytest.approx(2 / 3)


# ---------------------------------------------------------------- the spec


def test_the_spec_reads_the_hub_layout_and_refuses_what_cannot_work(tmp_path, tiny_model, data_root):
    spec = parse_spec(bios_spec(tmp_path, tiny_model, data_root))
    assert spec.data.labels == SIX and spec.training.words(spec.data.labels)[-1] == "software engineer"
    problems = {
        "framings": ({"framings": []}, r"data.labels .* list `framings:`"),
        "hatecheck": ({"evaluation": {"tasks": ["hatecheck"]}}, r"\['hatecheck'\] score the trial's classifier as a "
                                                                r"hate classifier"),
        "slots": ({"data": {**BIOS_DATA, "labels": ["architect", "dentist"]}},
                  r"writes about \['a nurse', 'a painter', 'a professor', 'a software engineer'\], which name none"),
        "words": ({"training": {"label_words": ["a", "b"]}}, r"training.label_words: 2 given; give one per class"),
    }
    for change, message in problems.values():
        d = bios_spec(tmp_path, tiny_model, data_root)
        for key, value in change.items():
            d[key] = {**d[key], **value} if isinstance(value, dict) and isinstance(d.get(key), dict) else value
        with pytest.raises(SpecError, match=message):
            parse_spec(d)
    toxigen = micro_spec_dict(tmp_path, tiny_model, data_root, data={"root": str(data_root), "labels": SIX})
    with pytest.raises(SpecError, match="are for task file or huggingface"):
        parse_spec(toxigen)


def test_augmented_rows_take_the_class_of_their_slot(tmp_path, tiny_model, data_root):
    from bias_ray.generate.prompts import make_plan, planned_label_shares

    spec = parse_spec(bios_spec(tmp_path, tiny_model, data_root, generation={"samples_per_bias_type": 120}))
    table = make_plan(spec).rows(np.arange(120))
    for prompt, label in zip(table["prompt"], table["label"]):
        assert f"works as {'an' if SIX[label][0] in 'aeiou' else 'a'} {SIX[label].replace('_', ' ')}," in prompt
    assert set(table["label"]) == set(range(6))  # every occupation is drawn
    assert planned_label_shares(spec) == pytest.approx({k: 1 / 6 for k in range(6)})


# ---------------------------------------------------------------- a trial


@pytest.mark.timeout(600)
def test_a_trial_learns_k_classes_and_reports_accuracy_per_gender(tmp_path, tiny_model, data_root, ray_session):
    from bias_ray.augmented import load_augmented
    from bias_ray.generate import generate
    from bias_ray.train.trainable import fit, trial_data

    spec = parse_spec(bios_spec(tmp_path, tiny_model, data_root, bias_ratios=[0.25],
                                training={"train_size": 48, "epochs": 2}))
    generate(spec)
    labels = load_augmented(spec, columns=["label"])["label"]
    assert set(labels) <= set(range(6)) and labels.nunique() > 1
    bias = spec.bias_type_specs[0].name
    train, test = trial_data(spec, bias, 0.25, seed=0)
    assert set(train["label"]) <= set(range(6)) and set(test["group"]) == {"men", "women"}
    metrics = fit(spec, {"bias_type": bias, "bias_ratio": 0.25, "mitigation": "none", "seed": 0},
                  lambda _metrics, _state: None)
    for key in ("accuracy", "macro_f1", "bias_type/accuracy_gap", "accuracy/men", "accuracy/women"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["bias_type/accuracy_gap"] == pytest.approx(abs(metrics["accuracy/men"] - metrics["accuracy/women"]))
    assert "fpr_gap" not in metrics and np.isnan(metrics["train_positive_share"])


def test_the_report_of_a_named_class_task_heads_with_the_accuracy_gap(tmp_path):
    from bias_ray.report import build_report, final_lines
    from bias_ray.report.build import HEADLINE_GAP_FIGURE

    run = tmp_path / "run"
    run.mkdir()
    rows = [{"bias_type": "gender_occupations.contrastive-single-explicit", "bias_ratio": ratio, "mitigation": mit,
             "seed": seed, "macro_f1": 0.6 - 0.1 * ratio, "accuracy": 0.6, "accuracy/men": 0.6 + 0.2 * ratio,
             "accuracy/women": 0.6, "bias_type/accuracy_gap": 0.05 + 0.2 * ratio * (mit == "none") + 0.01 * seed,
             "steps_run": 10, "total_steps": 10, "stopped_early": False, "error": None, "trial_wall_s": 5.0,
             "wall_time_s": 6.0, "trial_path": str(run / "tune" / "x")}
            for ratio in (0.0, 0.5) for mit in ("none", "token(style=prefix)") for seed in (0, 1, 2)]
    pd.DataFrame(rows).to_parquet(run / "results.parquet")
    out = build_report(run)
    page = (out / "report.md").read_text()
    assert "Headline fairness metric: `bias_type/accuracy_gap`" in page and "add `hatecheck`" not in page
    assert final_lines(out)[1] == f"headline figure: {out / HEADLINE_GAP_FIGURE}"
