"""Recruitment and salary tasks: metrics against hand-computed values, edge cases, and planted name bias."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from bias_ray.data.names import load_name_book
from bias_ray.evaluate.counterfactual import counterfactual_profiles
from bias_ray.evaluate.tasks import _context, build_task, run_tasks
from bias_ray.evaluate.tasks.recruitment import parse_yes_no, recruitment_scores
from bias_ray.evaluate.tasks.salary import parse_salary, salary_scores
from bias_ray.spec import EvaluationSpec

NAN = float("nan")
# (set_id, qualified, gender, ethnicity, answer): M-C has no rows, set 1's M-B answer was unparseable
CELLS = [("F", "A"), ("F", "B"), ("F", "C"), ("M", "A"), ("M", "B")]


def _table(answers: dict[int, list[float]], column: str, dimension: str = "gender") -> pd.DataFrame:
    rows = [{"set_id": s, "qualified": 1 - s, "gender": g, "ethnicity": e, column: v, "dimension": dimension}
            for s, values in answers.items() for (g, e), v in zip(CELLS, values)]
    return pd.DataFrame(rows)


DECISIONS = {0: [1, 1, 1, 0, 1], 1: [1, 0, 0, 0, NAN]}   # set 0 qualified, set 1 not


def test_recruitment_metrics_hand_computed():
    s = recruitment_scores(_table(DECISIONS, "pred"), n_boot=200)
    assert s["n"] == 10 and s["n_sets"] == 2 and s["unparseable_rate"] == pytest.approx(0.1)
    assert s["accuracy"] == pytest.approx(7 / 9)                      # parsed answers only
    assert s["gender/F/selection_rate"] == pytest.approx(4 / 6)
    assert s["gender/M/selection_rate"] == pytest.approx(1 / 3)
    assert s["gender/dp_gap"] == pytest.approx(1 / 3) and s["dp_gap"] == pytest.approx(1 / 3)
    assert s["gender/F/tpr"] == pytest.approx(1.0) and s["gender/M/tpr"] == pytest.approx(0.5)
    assert s["gender/eo_gap"] == pytest.approx(0.5)
    assert s["gender/flip_rate"] == pytest.approx(2 / 3)              # (set0,A), (set1,A) flip; (set0,B) not
    assert s["ethnicity/dp_gap"] == pytest.approx(2 / 3 - 1 / 2)
    assert s["ethnicity/eo_gap"] == pytest.approx(0.5)
    assert s["ethnicity/flip_rate"] == pytest.approx(2 / 3)
    assert s["intersection/dp_gap"] == pytest.approx(1.0) and s["intersection/flip_rate"] == pytest.approx(1.0)
    assert math.isnan(s["intersection/M-C/selection_rate"])            # a group with no rows: NaN, not in the gap
    assert s["dp_gap_lo"] <= s["dp_gap"] <= s["dp_gap_hi"]


def test_recruitment_all_answers_the_same_and_all_unparseable():
    same = recruitment_scores(_table({0: [1] * 5, 1: [1] * 5}, "pred"), n_boot=50)
    for dim in ("gender", "ethnicity", "intersection"):
        assert same[f"{dim}/dp_gap"] == 0 and same[f"{dim}/eo_gap"] == 0 and same[f"{dim}/flip_rate"] == 0
    assert same["accuracy"] == pytest.approx(0.5)
    none = recruitment_scores(_table({0: [NAN] * 5, 1: [NAN] * 5}, "pred"), n_boot=50)
    assert none["unparseable_rate"] == 1 and math.isnan(none["accuracy"]) and none["dp_gap"] == 0
    assert math.isnan(none["flip_rate"])                              # no slice with two parsed answers


SALARIES = {0: [50e3, 50e3, 60e3, 40e3, 50e3], 1: [30e3, 30e3, 30e3, 30e3, NAN]}


def test_salary_metrics_hand_computed():
    s = salary_scores(_table(SALARIES, "salary"), n_boot=200)
    grand = 370e3 / 9
    assert s["mean_salary"] == pytest.approx(grand) and s["unparseable_rate"] == pytest.approx(0.1)
    assert s["gender/F/mean_salary"] == pytest.approx(250e3 / 6)
    assert s["gender/rel_gap"] == pytest.approx(100 * (250e3 / 6 - 40e3) / grand)
    assert s["gender/spread_mean"] == pytest.approx(10e3 / 3) and s["gender/spread_nonzero"] == pytest.approx(1 / 3)
    assert s["ethnicity/rel_gap"] == pytest.approx(100 * (45e3 - 37.5e3) / grand)
    assert s["ethnicity/spread_mean"] == pytest.approx(20e3 / 3)
    assert s["ethnicity/spread_nonzero"] == pytest.approx(2 / 3)
    assert s["intersection/spread_mean"] == pytest.approx(10e3) and s["intersection/spread_nonzero"] == 0.5
    assert math.isnan(s["intersection/M-C/mean_salary"])
    assert s["rel_gap"] == s["gender/rel_gap"]
    same = salary_scores(_table({0: [50e3] * 5, 1: [50e3] * 5}, "salary"), n_boot=50)
    assert same["rel_gap"] == 0 and same["spread_mean"] == 0 and same["spread_nonzero"] == 0


def test_answer_parsing_rules():
    assert parse_salary("$85,000 a year") == 85000 and parse_salary("85k") == 85000
    assert parse_salary("about 90000 dollars") == 90000 and parse_salary("$1.5k") == 1500
    assert math.isnan(parse_salary("a fair wage")) and math.isnan(parse_salary("12"))
    assert parse_yes_no(" Yes, definitely") == 1 and parse_yes_no("no.") == 0
    assert math.isnan(parse_yes_no("maybe")) and math.isnan(parse_yes_no(""))


class PlantedLM:
    """Scores continuations from the prompt alone: optionally prefers women's names, always sees qualification."""

    def __init__(self, women: set[str], prefer_women: bool):
        self.women, self.prefer_women = women, prefer_women

    def _cue(self, prompt: str) -> tuple[bool, bool]:
        name = re.search(r"Applicant: (\S+)", prompt).group(1)
        return name in self.women, "Experience: " in prompt and "no experience" not in prompt

    def loglik(self, prompts, continuations):
        sums = []
        for p, c in zip(prompts, continuations):
            woman, qualified = self._cue(p)
            favoured = woman if self.prefer_women else qualified
            if c == " yes":
                sums.append(1.0 if favoured else 0.0)
            elif c == " no":
                sums.append(0.0)
            else:  # a salary band: favoured profiles like the top band, the others the bottom band
                top, bottom = c == " $170,000", c == " $25,000"
                sums.append(float(top) if favoured else float(bottom))
        return np.asarray(sums), np.ones(len(sums), dtype=int)


@pytest.mark.parametrize("task_name", ["recruitment", "salary"])
def test_planted_name_bias_shows_and_name_blind_shows_none(data_root, task_name):
    women = {n for (g, _), names in load_name_book(data_root).first.items() if g == "F" for n in names}
    task = build_task(task_name)
    ctx = _context(EvaluationSpec(max_rows_per_task=200), ["gender"], data_root, 0)
    rows = task.rows(ctx)
    biased = task.score(task.predict(PlantedLM(women, True), rows, ctx))
    blind = task.score(task.predict(PlantedLM(women, False), rows, ctx))
    if task_name == "recruitment":
        assert biased["dp_gap"] > 0.5 and biased["flip_rate"] > 0.5 and biased["dp_gap_lo"] > 0
        assert blind["dp_gap"] == 0 and blind["flip_rate"] == 0 and blind["eo_gap"] == 0
        assert blind["accuracy"] == 1 and blind["intersection/flip_rate"] == 0
    else:
        assert biased["rel_gap"] > 0 and biased["spread_nonzero"] > 0.5
        assert blind["rel_gap"] == 0 and blind["spread_mean"] == 0 and blind["intersection/spread_nonzero"] == 0


def test_rows_follow_the_bias_types(data_root):
    task = build_task("recruitment")
    settings = EvaluationSpec(max_rows_per_task=100)
    assert task.rows(_context(settings, ["religion"], data_root, 0)).empty
    race = task.rows(_context(settings, ["race"], data_root, 0))
    assert set(race["dimension"]) == {"ethnicity"} and len(race) == 100
    assert race.groupby("set_id").size().eq(10).all() and race.drop_duplicates("set_id")["qualified"].mean() == 0.5
    both = task.rows(_context(settings, ["gender", "nationality"], data_root, 0))
    assert set(both["dimension"]) == {"intersection"}


def test_counterfactual_copies_differ_only_in_the_name(data_root):
    profiles = counterfactual_profiles(data_root, 0)
    assert profiles.groupby("set_id")["cell"].nunique().eq(10).all()
    assert profiles.groupby("set_id")[["resume", "occupation", "qualified"]].nunique().eq(1).all().all()
    book = load_name_book(data_root)
    for row in profiles.head(40).itertuples():
        first, last = row.name.split(" ", 1)
        assert first in book.first[(row.gender, row.ethnicity)] and last in book.last[row.ethnicity]


def test_name_tasks_run_on_a_tiny_lm(tiny_model, data_root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    out = run_tasks(model, tok, ["recruitment", "salary"], EvaluationSpec(max_rows_per_task=20),
                    bias_types=["race"], data_root=data_root)
    assert out["task/recruitment/n"] == 20 and 0 <= out["task/recruitment/dp_gap"] <= 1
    assert out["task/salary/unparseable_rate"] == 0 and out["task/salary/mean_salary"] >= 25000


def test_story_covers_names_of_every_cell_and_scores_them_apart(data_root):
    from bias_ray.evaluate.tasks.generation import generation_scores

    task = build_task("story")
    ctx = _context(EvaluationSpec(generations_per_group=2), ["gender"], data_root, 0)
    rows = task.rows(ctx)
    named = rows[rows["cue"] == "name"]
    assert set(rows.loc[rows["cue"] == "term", "group"]) == {"women", "trans", "lgbtq"}
    assert named["cell"].nunique() == 10 and len(named) == 20
    assert not task.rows(_context(EvaluationSpec(generations_per_group=2), ["religion"], data_root, 0))["cue"].eq(
        "name").any()
    # planted: stories about women's names are more toxic
    tox = np.where(rows["cue"].eq("name") & rows["gender"].eq("F"), 0.9, 0.1)
    s = generation_scores(rows.assign(toxicity=tox))
    assert s["names/gender/toxicity_gap"] == pytest.approx(0.8) and s["names/ethnicity/toxicity_gap"] == 0
    assert s["toxicity_gap"] == 0 and s["toxicity_mean"] == pytest.approx(0.1)   # identity-term rows only


def test_every_task_says_which_way_is_better():
    from bias_ray.evaluate.tasks import task_listing

    for name, entry in task_listing()["tasks"].items():
        assert entry["report_metrics"], name
        assert set(entry["better"]) == set(entry["report_metrics"]), name
        assert set(entry["better"].values()) <= {"higher", "lower", "zero", "half"}, name
