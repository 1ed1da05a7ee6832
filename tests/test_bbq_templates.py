"""The BBQ template expander: the match check against every shipped example, sizes, seeding, and the BBQ task."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bias_ray.data.bbq_templates import (
    TEMPLATE_CATEGORIES,
    NamePair,
    expand_category,
    fill_slots,
    load_bbq_from_templates,
    parse_slot_lists,
    quartet,
    reproduce_example,
    shipped_match,
    template_rows,
)

SHIPPED = ["Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation"]
# Sizes of the BBQ release (Parrish et al. 2022, Table 1) for the categories not shipped here.
PUBLISHED_SIZES = {"Gender_identity": 5672, "Race_ethnicity": 6880, "SES": 6864}


@pytest.fixture(scope="module")
def matches(data_root):
    return {c: shipped_match(data_root, c) for c in SHIPPED}


def test_expander_reproduces_at_least_99_percent_of_every_shipped_example(matches):
    total = sum(m["n"] for m in matches.values())
    matched = sum(m["matched"] for m in matches.values())
    assert total == 11956
    assert matched / total >= 0.99
    for category, m in matches.items():
        assert m["share"] >= 0.99, category


def test_the_only_misses_are_the_hand_relabelled_other_employee_items(matches, data_root):
    """Physical_appearance Q10: the shipped answer label "other employee" is not the sheet's NAME2 ("employee")."""
    misses = [ex for m in matches.values() for ex in m["misses"]]
    assert len(misses) == 4
    rows = template_rows(data_root / "bbq" / "templates", "Physical_appearance")
    for ex in misses:
        assert ex["category"] == "Physical_appearance" and ex["question_index"] == "10"
        labels = [v[0] for v in ex["answer_info"].values()]
        assert "other employee" in labels
        # with the name the sheet really filled in, the expander writes the example exactly
        fixed = {**ex, "answer_info": {k: (["employee", v[1]] if v[0] == "other employee" else v)
                                       for k, v in ex["answer_info"].items()}}
        assert reproduce_example(rows, "Physical_appearance", fixed)


def test_match_check_fails_on_a_changed_example(data_root):
    import json

    rows = template_rows(data_root / "bbq" / "templates", "Religion")
    with open(data_root / "bbq" / "data" / "Religion.jsonl") as f:
        ex = json.loads(f.readline())
    assert reproduce_example(rows, "Religion", ex)
    assert not reproduce_example(rows, "Religion", {**ex, "label": (ex["label"] + 1) % 3})
    assert not reproduce_example(rows, "Religion", {**ex, "context": ex["context"] + " Extra."})
    flipped = "disambig" if ex["context_condition"] == "ambig" else "ambig"
    assert not reproduce_example(rows, "Religion", {**ex, "context_condition": flipped})


def test_sizes_and_name_pairs_per_template(matches, data_root):
    for category, m in matches.items():
        extra = 20 if category == "Disability_status" else 0  # Q4 b and Q19 b, dropped by the original's parser
        assert m["n_expanded"] == m["n"] + extra, category
        if category != "Physical_appearance":  # shipped counts "other employee" as one more pair (see above)
            assert m["pairs_per_template_expanded"] == pytest.approx(m["pairs_per_template_shipped"]), category
    for category, size in PUBLISHED_SIZES.items():
        assert len(expand_category(data_root, category, 0)) == size


def test_seed_fixes_the_set_and_varies_order_and_unknown_wording(data_root):
    a, b = expand_category(data_root, "SES", 0), expand_category(data_root, "SES", 0)
    pd.testing.assert_frame_equal(a, b)
    c = expand_category(data_root, "SES", 1)
    assert len(c) == len(a) and (a["answers"].map(tuple) != c["answers"].map(tuple)).any()
    assert a["answers"].map(lambda xs: xs[2]).nunique() > 1  # answer order is shuffled


def test_every_template_gives_four_examples_with_the_right_gold():
    row = {"Q_id": "1", "Ambiguous_Context": "A {{NAME1}} and a {{NAME2}} met at the {{WORD1}}.",
           "Disambiguating_Context": "The {{NAME1}} was rude.", "Question_negative_stereotype": "Who was rude?",
           "Question_non_negative": "Who was polite?", "Answer_negative": "The {{NAME1}}",
           "Answer_non_negative": "The {{NAME2}}", "Known_stereotyped_groups": '["old"]'}
    exs = quartet(row, "Age", NamePair("old man", "elderly person", "old", "old"), "park", "", "Unknown", (2, 0, 1))
    assert [(e["question_polarity"], e["context_condition"]) for e in exs] == [
        ("neg", "ambig"), ("neg", "disambig"), ("nonneg", "ambig"), ("nonneg", "disambig")]
    assert exs[0]["answers"] == ["Unknown", "The old man", "The elderly person"]
    assert "an elderly person" in exs[0]["context"]          # a -> an before a vowel
    assert [e["label"] for e in exs] == [0, 1, 0, 2]
    assert exs[1]["context"].endswith("The old man was rude.")


def test_slot_parsing_and_filling():
    assert parse_slot_lists("WORD1: [a, b c]; WORD2: [d]") == (["a", "b c"], ["d"])
    assert parse_slot_lists("{{NAME1}}: [x]; {{NAME2}}: [y, z]") == (["x"], ["y", "z"])
    assert parse_slot_lists("NAME2: [y]; NAME1: [x]") == (["x"], ["y"])
    assert fill_slots("I saw a {{NAME1}} and a European", "Asian man", "x") == "I saw an Asian man and a European"
    assert fill_slots("a lesbian man", "gay", "lesbian") == "a lesbian woman"


def test_bbq_task_scores_gender_and_race_from_templates(data_root):
    from bias_ray.evaluate.tasks import _context, build_task

    task = build_task("bbq")
    for bias, category in (("gender", "Gender_identity"), ("race", "Race_ethnicity")):
        ctx = _context(None, [bias], data_root, 0)
        rows = task.rows(ctx)
        assert len(rows) == ctx.settings.max_rows_per_task and set(rows["bias_type"]) == {category}
        assert set(rows["source"]) == {"bbq_templates"}
        # a model that always names the stereotyped group: s_dis = 1 on the matched examples
        from bias_ray.evaluate.tasks.bbq import target_index

        pred = [max(0, target_index(r.answers, r.answer_groups, r.stereotyped_groups)) for r in rows.itertuples()]
        s = task.score(rows.assign(pred=pred))
        assert s["n"] > 0 and not math.isnan(s["s_dis"])
        assert s["n_unmatched"] / s["n"] < 0.05


def test_template_rows_in_loader_layout(data_root):
    rows = load_bbq_from_templates(data_root, ["SES"], 0)
    assert {"id", "context", "question", "answers", "answer_groups", "label", "stereotyped_groups"} <= set(rows.columns)
    assert rows["id"].is_unique and rows["label"].between(0, 2).all()
    assert set(TEMPLATE_CATEGORIES) >= {"Gender_identity", "Race_ethnicity", "SES"}
