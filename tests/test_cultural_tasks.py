"""The paper's culture tasks that need data this machine lacks (issue 24): GlobalOpinionQA and the cultural
classification sets, each tested on small local files of the same layout, and their missing-data errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bias_ray.evaluate.tasks import build_task, run_tasks
from bias_ray.evaluate.tasks.global_opinions import js_distance, load_opinions, opinion_scores, parse_literal
from bias_ray.spec import EvaluationSpec
from tests.conftest import micro_spec_dict

COUNTRIES = {"arabic": ["Egypt", "Jordan"], "chinese": ["China"]}


def opinions_file(tmp_path) -> str:
    """Three questions in the hub's layout: options and selections as Python literals in text."""
    rows = [
        {"question": "Is religion important in your life?", "options": "['Yes', 'No']",
         "selections": "defaultdict(<class 'list'>, {'Egypt': [0.9, 0.1], 'China': [0.2, 0.8], 'France': [0.4, 0.6]})",
         "source": "GAS"},
        {"question": "How good is the economy?", "options": "['Good', 'Bad', 'Neither']",
         "selections": "defaultdict(<class 'list'>, {'Jordan': [0.3, 0.5, 0.2], 'China': [0.7, 0.2]})",
         "source": "GAS"},  # China's answer lacks an option: left out for that question
        {"question": "Only France answered this", "options": "['A', 'B']",
         "selections": "defaultdict(<class 'list'>, {'France': [0.5, 0.5]})", "source": "WVS"},
    ]
    path = tmp_path / "goqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_js_distance_and_the_hubs_literals():
    assert js_distance([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)  # base 2: disjoint supports are 1 apart
    m = np.array([0.5, 0.25, 0.25])
    kl = 0.5 * 1 * np.log2(1 / 0.75) + 0.5 * (0.5 * np.log2(0.5 / 0.75) + 0.5 * np.log2(0.5 / 0.25))
    assert js_distance([1, 0, 0], [0.5, 0.5, 0]) == pytest.approx(np.sqrt(kl))
    assert m.sum() == 1
    assert parse_literal("defaultdict(<class 'list'>, {'Egypt': [0.9, 0.1]})") == {"Egypt": [0.9, 0.1]}


def test_opinions_load_only_the_listed_countries_and_score_by_hand(tmp_path):
    rows = load_opinions(opinions_file(tmp_path), COUNTRIES)
    assert len(rows) == 2  # France's own question goes
    assert rows.loc[0, "human"] == {"Egypt": [0.9, 0.1], "China": [0.2, 0.8]}
    assert rows.loc[1, "human"] == {"Jordan": [0.3, 0.5, 0.2]}
    rows["model"] = [[0.9, 0.1], [0.3, 0.5, 0.2]]  # agrees with Egypt and Jordan exactly
    scores = opinion_scores(rows, COUNTRIES)
    assert scores["similarity/arabic"] == pytest.approx(1.0)
    assert scores["similarity/chinese"] == pytest.approx(1 - js_distance([0.9, 0.1], [0.2, 0.8]))
    assert scores["similarity_gap"] == pytest.approx(js_distance([0.9, 0.1], [0.2, 0.8]))
    assert scores["countries/arabic"] == 2 and scores["countries/chinese"] == 1


def test_global_opinions_runs_on_a_causal_lm(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = EvaluationSpec(tasks=["global_opinions"], task_options={
        "global_opinions": {"path": opinions_file(tmp_path), "countries": COUNTRIES}})
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    out = run_tasks(model, tok, spec_or_settings=settings, bias_types=["culture"])
    assert out["task/global_opinions/n"] == 2
    for key in ("similarity/arabic", "similarity/chinese", "similarity_mean"):
        assert 0.0 < out[f"task/global_opinions/{key}"] <= 1.0


def sets_spec(tmp_path) -> list[dict]:
    datasets = pytest.importorskip("datasets")
    hate = pd.DataFrame({"tweet": [f"hateful text {i}" if i % 2 else f"kind text {i}" for i in range(12)],
                         "offensive": [i % 2 for i in range(12)]})
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_pandas(hate[:4]),
                               "test": datasets.Dataset.from_pandas(hate[4:].reset_index(drop=True))})
    dd.save_to_disk(str(tmp_path / "arabic_hate"))
    spam = pd.DataFrame({"text": [f"buy now {i}" if i < 3 else f"hello friend {i}" for i in range(6)],
                         "label": [1, 1, 1, 0, 0, 0]})
    spam.to_csv(tmp_path / "chinese_spam.csv", index=False)
    return [{"name": "arabic_hate", "path": str(tmp_path / "arabic_hate"), "culture": "arabic", "relation": "direct",
             "columns": {"text": "tweet", "label": "offensive"}},
            {"name": "chinese_spam", "path": str(tmp_path / "chinese_spam.csv"), "culture": "chinese",
             "relation": "indirect"}]


def test_cultural_sets_score_the_trials_classifier_per_set(tmp_path):
    from bias_ray.data.custom import DataError

    settings = EvaluationSpec(tasks=["cultural_sets"], task_options={"cultural_sets": {"sets": sets_spec(tmp_path)}})
    says_hate = lambda texts: np.array([int("hateful" in t or "buy" in t) for t in texts])  # noqa: E731
    out = run_tasks(None, None, spec_or_settings=settings, classify=says_hate)
    assert out["task/cultural_sets/n"] == 8 + 6  # the hub folder's test split only
    assert out["task/cultural_sets/arabic_hate/macro_f1"] == 1.0 and out["task/cultural_sets/trained_classifier"] == 1
    assert out["task/cultural_sets/direct/macro_f1"] == 1.0 and out["task/cultural_sets/chinese/macro_f1"] == 1.0
    says_none = lambda texts: np.zeros(len(texts), dtype=int)  # noqa: E731
    out = run_tasks(None, None, spec_or_settings=settings, classify=says_none)
    # both sets: class 0's F1 is 2/3 (every row called 0, half of them right), class 1's is 0
    assert out["task/cultural_sets/macro_f1"] == pytest.approx(1 / 3)
    assert out["task/cultural_sets/direct_minus_indirect"] == pytest.approx(0.0)
    bad = [{**sets_spec(tmp_path)[1], "columns": {"label": "nope"}}]
    with pytest.raises(DataError, match=r"set 'chinese_spam' has no column\(s\) \['nope'\]"):
        build_task("cultural_sets", {"sets": bad}).rows(None)


def test_missing_culture_data_stops_the_spec_naming_the_fix(tmp_path, tiny_model, data_root, monkeypatch):
    import yaml

    from bias_ray.cli import app

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    spec = micro_spec_dict(tmp_path, tiny_model, data_root, evaluation={
        "tasks": ["global_opinions", "cultural_sets"],
        "task_options": {"cultural_sets": {"sets": [{"name": "osact", "path": str(tmp_path / "absent.csv")}]}}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = CliRunner().invoke(app, ["validate", str(path)], env={"COLUMNS": "300"})
    text = " ".join(out.output.split())
    assert out.exit_code == 2, out.output
    assert "task global_opinions: evaluation.task_options.global_opinions.path 'Anthropic/llm_global_opinions': " \
           "cannot load the Hugging Face dataset" in text
    assert "save_to_disk('<folder>')" in text
    assert "task cultural_sets: evaluation.task_options.cultural_sets.sets (osact):" in text and "no such file" in text
    empty = micro_spec_dict(tmp_path, tiny_model, data_root, evaluation={"tasks": ["cultural_sets"]})
    path.write_text(yaml.safe_dump(empty))
    out = CliRunner().invoke(app, ["validate", str(path)], env={"COLUMNS": "300"})
    assert out.exit_code == 2 and "no set is listed" in " ".join(out.output.split())
