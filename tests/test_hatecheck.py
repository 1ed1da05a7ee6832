"""HateCheck: the loader on the real csv, hand-computed rates, and the task on a trial's trained classifier."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bias_ray.data.loaders import hatecheck_slug, load_hatecheck
from bias_ray.evaluate.tasks import run_tasks
from bias_ray.evaluate.tasks.hatecheck import hatecheck_scores
from bias_ray.spec import EvaluationSpec, parse_spec

GROUPS = {"women": "gender", "trans people": "gender", "gay people": "sexual_orientation", "black people": "race",
          "disabled people": "disability", "Muslims": "religion", "immigrants": "nationality"}


def test_real_csv_loads_every_case_with_the_seven_groups(data_root):
    df = load_hatecheck(data_root)
    assert len(df) == 3728 and df["id"].is_unique
    assert df["label"].value_counts().to_dict() == {1: 2563, 0: 1165}
    assert set(df["group"]) - {""} == set(GROUPS) and (df["group"] == "").sum() == 292
    by_group = df[df["group"] != ""].groupby("group")["bias_type"].unique()
    assert {g: list(b) for g, b in by_group.items()} == {g: [b] for g, b in GROUPS.items()}
    assert df["functionality"].nunique() == 29
    assert sorted(hatecheck_slug(g) for g in GROUPS) == ["black", "disabled", "gay", "immigrants", "muslims", "trans",
                                                          "women"]


def test_missing_file_or_column_is_named(tmp_path, data_root):
    with pytest.raises(FileNotFoundError, match="HateCheck test suite csv"):
        load_hatecheck(tmp_path)
    (tmp_path / "hatecheck").mkdir()
    real = pd.read_csv(data_root / "hatecheck" / "test_suite_cases.csv")
    real.drop(columns=["target_ident"]).to_csv(tmp_path / "hatecheck" / "test_suite_cases.csv", index=False)
    with pytest.raises(ValueError, match=r"columns \['target_ident'\] are missing"):
        load_hatecheck(tmp_path)
    real.assign(label_gold="hate").to_csv(tmp_path / "hatecheck" / "test_suite_cases.csv", index=False)
    with pytest.raises(ValueError, match="label_gold holds"):
        load_hatecheck(tmp_path)


def _table(rows: list[tuple[str, str, int, int]], targets: set[str]) -> pd.DataFrame:
    """rows of (group, functionality, label, pred)."""
    p = pd.DataFrame(rows, columns=["group", "functionality", "label", "pred"])
    return p.assign(is_target=p["group"].isin(targets))


ROWS = [
    ("women", "ident_neutral_nh", 0, 1),     # FP
    ("women", "ident_neutral_nh", 0, 0),     # TN
    ("women", "derog_neg_emote_h", 1, 1),    # TP
    ("trans people", "counter_quote_nh", 0, 1),  # FP
    ("trans people", "derog_neg_emote_h", 1, 0),  # FN
    ("trans people", "derog_neg_emote_h", 1, 1),  # TP
    ("Muslims", "ident_neutral_nh", 0, 0),   # TN
    ("Muslims", "derog_neg_emote_h", 1, 0),  # FN
    ("", "target_obj_nh", 0, 1),             # FP, no target group
]


def test_scores_hand_computed():
    s = hatecheck_scores(_table(ROWS, {"women", "trans people"}))
    assert s["n"] == 9 and s["n_target"] == 6 and s["n_other"] == 2
    assert s["target_fpr"] == pytest.approx(2 / 3)   # women FP, TN; trans FP
    assert s["target_fnr"] == pytest.approx(1 / 3)   # women TP; trans FN, TP
    assert s["other_fpr"] == 0.0 and s["other_fnr"] == 1.0   # Muslims; the no-target case is in no group
    assert s["target_excess_fpr"] == pytest.approx(2 / 3)   # group-specific false alarms: target - control
    assert s["fpr"] == pytest.approx(3 / 5) and s["fnr"] == pytest.approx(2 / 4)
    assert s["women/fpr"] == 0.5 and s["women/fnr"] == 0.0
    assert s["trans/fpr"] == 1.0 and s["trans/fnr"] == 0.5 and s["muslims/fnr"] == 1.0
    assert s["func/ident_neutral_nh/error"] == 0.5          # the FPR of a non-hateful functionality
    assert s["func/derog_neg_emote_h/error"] == pytest.approx(1 / 3)  # the FNR of a hateful one
    assert s["func/counter_quote_nh/error"] == 1.0
    assert "func/target_obj_nh/error" not in s               # over the target groups only


def test_edge_cases_no_target_rows_and_constant_predictions():
    none = hatecheck_scores(_table(ROWS, {"black people"}))   # a target group without rows
    assert none["n_target"] == 0 and math.isnan(none["target_fpr"]) and math.isnan(none["target_fnr"])
    assert none["other_fpr"] == pytest.approx(2 / 4) and math.isnan(none["target_excess_fpr"])
    everything_hate = hatecheck_scores(_table([(g, f, y, 1) for g, f, y, _ in ROWS], {"women"}))
    assert everything_hate["fpr"] == 1.0 and everything_hate["fnr"] == 0.0 and everything_hate["target_fpr"] == 1.0
    nothing_hate = hatecheck_scores(_table([(g, f, y, 0) for g, f, y, _ in ROWS], {"women"}))
    assert nothing_hate["fpr"] == 0.0 and nothing_hate["fnr"] == 1.0 and nothing_hate["target_fnr"] == 1.0
    only_hateful = hatecheck_scores(_table([r for r in ROWS if r[2] == 1], {"women"}))
    assert math.isnan(only_hateful["women/fpr"]) and only_hateful["women/fnr"] == 0.0


def test_classifier_is_used_on_every_case_and_unknown_groups_fail(data_root):
    seen: list[str] = []

    def flag_women(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return np.array([int("women" in t.lower()) for t in texts])

    out = run_tasks(None, None, ["hatecheck"], EvaluationSpec(max_rows_per_task=10), bias_types=["gender"],
                    data_root=data_root, classify=flag_women)
    assert out["task/hatecheck/n"] == 3728 == len(seen)  # the row cap is for LM tasks; a classifier sees all
    assert out["task/hatecheck/trained_classifier"] == 1.0
    raw = pd.read_csv(data_root / "hatecheck" / "test_suite_cases.csv")
    women_nh = raw[(raw["target_ident"] == "women") & (raw["label_gold"] == "non-hateful")]
    flagged = women_nh["test_case"].str.lower().str.contains("women").mean()
    assert out["task/hatecheck/women/fpr"] == pytest.approx(flagged)
    assert out["task/hatecheck/target_fpr"] > 0 and out["task/hatecheck/trans/fpr"] == 0.0
    assert out["task/hatecheck/other_fpr"] == 0.0 and out["task/hatecheck/black/fnr"] == 1.0
    from bias_ray.spec import BiasType

    bad = BiasType(name="x", groups=["women"], hatecheck_groups=["woman"])
    with pytest.raises(ValueError, match=r"\['woman'\] are not HateCheck target groups"):
        run_tasks(None, None, ["hatecheck"], EvaluationSpec(), bias_types=[bad], data_root=data_root,
                  classify=flag_women)


def test_the_control_leaves_out_groups_the_augmented_rows_also_write_about(data_root):
    """Gender's lgbtq rows are sexual orientation's too, so "gay people" is no control for gender; for
    religion, whose groups no other bias type names, every other group is."""
    from bias_ray.evaluate.tasks.hatecheck import overlapping_groups
    from bias_ray.spec import BiasType, bias_type_catalog

    def flag_gay(texts: list[str]) -> np.ndarray:
        return np.array([int("gay" in t.lower()) for t in texts])

    raw = load_hatecheck(data_root)
    sizes = raw[raw["group"] != ""].groupby("group").size()
    gender = run_tasks(None, None, ["hatecheck"], EvaluationSpec(), bias_types=["gender"], data_root=data_root,
                       classify=flag_gay)
    assert gender["task/hatecheck/n_other"] == sizes.drop(["women", "trans people", "gay people"]).sum()
    assert gender["task/hatecheck/other_fpr"] == 0.0 and gender["task/hatecheck/gay/fpr"] > 0.5
    religion = run_tasks(None, None, ["hatecheck"], EvaluationSpec(), bias_types=["religion"], data_root=data_root,
                         classify=flag_gay)
    assert religion["task/hatecheck/n_other"] == sizes.drop("Muslims").sum()
    assert religion["task/hatecheck/other_fpr"] > 0
    catalog = bias_type_catalog()
    assert overlapping_groups([BiasType(name="gender", **catalog["gender"])]) == {"women", "trans people",
                                                                                 "gay people"}
    assert overlapping_groups([BiasType(name="mine", groups=["someone"])]) == set()  # an inline type of its own


@pytest.mark.timeout(120)
def test_without_a_classifier_it_falls_back_to_the_lm(tiny_model, data_root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm, tok = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    out = run_tasks(lm, tok, ["hatecheck"], EvaluationSpec(max_rows_per_task=16), bias_types=["religion"],
                    data_root=data_root)
    assert out["task/hatecheck/n"] == 16 and out["task/hatecheck/trained_classifier"] == 0.0
    assert 0 <= out["task/hatecheck/fpr"] <= 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_trial_scores_hatecheck_on_its_trained_classifier(tmp_path, tiny_model, data_root, monkeypatch):
    """Through fit(): the classifier sees every case, tagged as the token mitigation tags evaluation text."""
    import bias_ray.train.trainable as trainable
    from tests.conftest import micro_spec_dict
    from tests.test_planted_bias import planted_rows, write_augmented

    d = micro_spec_dict(tmp_path, tiny_model, data_root, mitigations=["token"], bias_ratios=[0.5],
                        training={"train_size": 32, "batch_size": 16, "epochs": 1, "eval_every": 2,
                                  "max_length": 32, "max_eval_rows": 32},
                        evaluation={"tasks": ["hatecheck"]})
    write_augmented(d, planted_rows(data_root, n=40))
    spec = parse_spec(d, check_files=False)
    batches: list[list[str]] = []
    real_probabilities = trainable.class_probabilities

    def recording_probabilities(model, student, texts, batch_size=64):  # predict and HateCheck's scores both
        batches.append(list(texts))
        return real_probabilities(model, student, texts, batch_size)

    monkeypatch.setattr(trainable, "class_probabilities", recording_probabilities)
    last = trainable.fit(spec, {"bias_type": "religion", "bias_ratio": 0.5, "mitigation": "token", "seed": 0},
                         lambda m, s: None)
    assert last["task/hatecheck/n"] == 3728 and last["task/hatecheck/n_target"] == 484  # Muslims
    assert last["task/hatecheck/trained_classifier"] == 1.0
    assert np.isfinite(last["task/hatecheck/target_fpr"]) and np.isfinite(last["task/hatecheck/other_fpr"])
    assert 0 <= last["task/hatecheck/target_excess_auc"] <= 1  # the classifier's scores rank the cases too
    hatecheck_batch = max(batches, key=len)
    assert len(hatecheck_batch) == 3728 and all(t.startswith("<real> ") for t in hatecheck_batch)
    assert "I hate women." in {t.removeprefix("<real> ") for t in hatecheck_batch}


def test_max_rows_option_caps_the_classifier_cases_per_group(data_root):
    from bias_ray.evaluate.tasks import _context
    from bias_ray.evaluate.tasks.hatecheck import HateCheckTask

    ctx = _context(EvaluationSpec(max_rows_per_task=10), ["religion"], data_root, 0)
    ctx.classify = lambda texts: np.zeros(len(texts), dtype=int)
    capped = HateCheckTask("hatecheck", max_rows=80).rows(ctx)
    assert capped["group"].value_counts().to_dict() == {g: 10 for g in [*GROUPS, ""]}  # 80 // 8 groups
    assert len(HateCheckTask("hatecheck", max_rows=None).rows(ctx)) == 3728
    ctx.classify = None  # the LM fallback follows max_rows_per_task
    assert len(HateCheckTask("hatecheck").rows(ctx)) == 8


def test_target_excess_auc_ranks_harmless_target_cases_against_the_control_and_ignores_the_threshold():
    """0.5 when the two sets score alike; 1 when every harmless target case scores above every control case;
    the same under any monotone change of the scores (a seed's calibration), where the FPR excess is not."""
    from bias_ray.evaluate.tasks.hatecheck import hatecheck_scores
    from bias_ray.measures.metrics import rank_auc

    assert rank_auc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert rank_auc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5
    assert rank_auc(np.array([0.3, 0.7]), np.array([0.5])) == 0.5
    assert np.isnan(rank_auc(np.array([]), np.array([0.5])))
    target = np.array([0.60, 0.70, 0.80, 0.55])
    control = np.array([0.40, 0.65, 0.30, 0.52])
    frame = pd.DataFrame({"label": 0, "group": ["women"] * 4 + ["black people"] * 4,
                          "is_target": [True] * 4 + [False] * 4, "functionality": "ident_neutral_nh",
                          "score": np.concatenate([target, control])})
    frame["pred"] = (frame["score"] > 0.5).astype(int)
    calibrated = hatecheck_scores(frame)
    shifted = frame.assign(score=frame["score"] ** 3)  # a classifier that flags less, same order
    shifted["pred"] = (shifted["score"] > 0.5).astype(int)
    assert hatecheck_scores(shifted)["target_excess_auc"] == calibrated["target_excess_auc"] == 14 / 16
    assert hatecheck_scores(shifted)["target_excess_fpr"] != calibrated["target_excess_fpr"]
