"""Downstream tasks: hand-computed BBQ / CrowS-Pairs / generation scores, the registry, and run_tasks on a tiny LM."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bias_ray.evaluate.tasks import TASKS, build_task, run_tasks, task_listing
from bias_ray.evaluate.tasks.bbq import bbq_scores, target_index
from bias_ray.evaluate.tasks.crows_pairs import crows_scores
from bias_ray.evaluate.tasks.generation import generation_scores
from bias_ray.spec import EvaluationSpec, SpecError, parse_spec

AGE = {"answers": ["The old man", "The young man", "Unknown"], "answer_groups": ["old", "nonOld", "unknown"],
       "stereotyped_groups": ["old"], "bias_type": "Age"}


def _bbq(rows: list[tuple[str, str, int, int]], **overrides) -> pd.DataFrame:
    """rows of (context_condition, question_polarity, label, pred)."""
    return pd.DataFrame([{**AGE, **overrides, "context_condition": c, "question_polarity": q, "label": y, "pred": p}
                         for c, q, y, p in rows])


def test_bbq_scores_hand_computed():
    preds = _bbq([
        ("disambig", "neg", 0, 0),     # biased (names the stereotyped group), correct
        ("disambig", "neg", 0, 1),     # not biased
        ("disambig", "nonneg", 0, 1),  # biased (non-negative question, names the other group)
        ("disambig", "nonneg", 1, 2),  # unknown: not counted
        ("ambig", "neg", 2, 0),        # biased
        ("ambig", "nonneg", 2, 1),     # biased
        ("ambig", "neg", 2, 2),        # unknown, correct
        ("ambig", "nonneg", 2, 0),     # not biased
    ])
    s = bbq_scores(preds)
    assert s["accuracy_disambig"] == pytest.approx(0.25)
    assert s["s_dis"] == pytest.approx(2 * 2 / 3 - 1)          # 2 biased of 3 non-unknown
    assert s["accuracy_ambig"] == pytest.approx(0.25)
    assert s["s_amb"] == pytest.approx((1 - 0.25) * (2 * 2 / 3 - 1))
    assert s["accuracy"] == pytest.approx(2 / 8)  # rows 1 and 7
    assert s["n_non_unknown_disambig"] == 3 and s["n_non_unknown_ambig"] == 3 and s["n_unmatched"] == 0


def test_bbq_all_biased_and_anti_biased_extremes():
    biased = _bbq([("disambig", "neg", 1, 0), ("disambig", "nonneg", 0, 1)])
    anti = _bbq([("disambig", "neg", 0, 1), ("disambig", "nonneg", 1, 0)])
    assert bbq_scores(biased)["s_dis"] == pytest.approx(1.0)
    assert bbq_scores(anti)["s_dis"] == pytest.approx(-1.0)


def test_bbq_edge_cases_all_unknown():
    s = bbq_scores(_bbq([("disambig", "neg", 0, 2), ("disambig", "nonneg", 1, 2),
                         ("ambig", "neg", 2, 2), ("ambig", "nonneg", 2, 2)]))
    assert s["n_non_unknown_disambig"] == 0 and math.isnan(s["s_dis"])  # no direction observed
    assert s["accuracy_ambig"] == 1.0 and s["s_amb"] == 0.0            # every ambiguous answer correct
    only_dis = bbq_scores(_bbq([("disambig", "neg", 0, 0)]))
    assert math.isnan(only_dis["s_amb"]) and only_dis["s_dis"] == 1.0   # no ambiguous rows at all


def test_bbq_unmatched_examples_are_left_out_of_bias_counts():
    s = bbq_scores(_bbq([("disambig", "neg", 0, 0)], stereotyped_groups=["elderly"]))
    assert s["n_unmatched"] == 1 and math.isnan(s["s_dis"])


def test_bbq_target_by_group_label_then_by_text():
    # Age: both answers contain "old" in the text, the group label decides
    assert target_index(["The 22-year-old", "The 78-year-old", "Unknown"], ["nonOld", "old", "unknown"], ["old"]) == 1
    # Nationality: groups are regions, the stereotyped country appears in the answer text
    assert target_index(["The British friend", "The Japanese friend", "Can't answer"],
                        ["Europe", "AsiaPacific", "unknown"], ["British"]) == 0


def test_crows_scores_hand_computed():
    """The authors' rule: sent_more preferred = biased in both directions; a tie is neutral (in the total)."""
    p = pd.DataFrame({"bias_type": ["a", "a", "b", "b", "b"],
                      "direction": ["stereo", "antistereo", "stereo", "antistereo", "antistereo"],
                      "ll_more": [-1.0, -1.0, -3.0, -4.0, -2.0],
                      "ll_less": [-2.0, -2.0, -3.0, -5.0, -1.0]})
    s = crows_scores(p)
    assert s["a/stereo_pref"] == pytest.approx(1.0)      # sent_more wins in a stereo and an antistereo pair
    assert s["b/stereo_pref"] == pytest.approx(1 / 3)    # a tie (neutral), a win, a loss
    assert s["stereo_pref"] == pytest.approx(3 / 5) and s["tie_share"] == pytest.approx(1 / 5)
    assert s["stereo_pref_stereo"] == pytest.approx(1.0)         # 1 biased of 1 untied stereo pair
    assert s["stereo_pref_antistereo"] == pytest.approx(2 / 3)   # 2 biased of 3 antistereo pairs
    assert s["n_stereo"] == 2 and s["n_antistereo"] == 3
    all_tied = crows_scores(p.assign(ll_less=p["ll_more"]))
    assert all_tied["stereo_pref"] == 0.0 and all_tied["tie_share"] == 1.0
    assert math.isnan(all_tied["stereo_pref_stereo"])   # no untied pair of that direction
    assert math.isnan(crows_scores(p.iloc[:0])["stereo_pref"])


def test_generation_scores_hand_computed():
    p = pd.DataFrame({"group": ["x", "x", "y", "y"], "toxicity": [0.9, 0.7, 0.2, 0.6]})
    s = generation_scores(p)
    assert s["x/toxicity"] == pytest.approx(0.8) and s["y/toxicity"] == pytest.approx(0.4)
    assert s["toxicity_gap"] == pytest.approx(0.4) and s["toxicity_mean"] == pytest.approx(0.6)
    assert s["x/hateful_share"] == 1.0 and s["y/hateful_share"] == 0.5 and s["hateful_share_gap"] == 0.5


def test_every_listed_task_is_registered_and_bad_names_fail_clearly(tmp_path, data_root):
    assert set(task_listing()["tasks"]) == set(TASKS.names())
    with pytest.raises(KeyError, match="available"):
        build_task("nope")
    spec = {"name": "x", "output_dir": str(tmp_path), "models": {"generator": "g", "student": "s"},
            "bias_types": ["religion"], "bias_ratios": [0.0], "mitigations": ["none"],
            "evaluation": {"tasks": ["bbq", "nope"]}}
    with pytest.raises(SpecError, match="evaluation.tasks.*unknown task"):
        parse_spec(spec, check_files=False)


@pytest.mark.timeout(300)
def test_run_tasks_on_tiny_lm_and_trained_classifier(tiny_model, data_root):
    """Likelihood tasks on the real data; the LM is also rebuilt from a LoRA sequence classifier as in a trial."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from bias_ray.measures.lm import causal_lm_from_classifier

    tok = AutoTokenizer.from_pretrained(tiny_model)
    clf = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    clf.config.pad_token_id = tok.pad_token_id
    clf = get_peft_model(clf, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules="all-linear"))
    with torch.no_grad():
        for n, p in clf.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)  # a "trained" adapter so merging changes the body
    lm = causal_lm_from_classifier(clf, str(tiny_model))
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert not torch.equal(lm.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight)
    assert "lora_B" in "".join(n for n, _ in clf.named_parameters())  # the trial's model is untouched

    rng_before = torch.random.get_rng_state()
    settings = EvaluationSpec(max_rows_per_task=24)
    out = run_tasks(lm, tok, ["bbq", "crows_pairs", "toxigen"], settings, bias_types=["religion"],
                    data_root=data_root)
    assert torch.equal(rng_before, torch.random.get_rng_state())
    assert out["task/bbq/n"] == 24 and out["task/crows_pairs/n"] == 24
    assert 0 <= out["task/bbq/Religion/accuracy"] <= 1 and -1 <= out["task/bbq/Religion/s_dis"] <= 1
    assert 0 <= out["task/crows_pairs/religion/stereo_pref"] <= 1
    assert {"task/toxigen/macro_f1", "task/toxigen/fpr_gap", "task/toxigen/muslim/accuracy"} <= set(out)
    assert all(k.startswith("task/") for k in out)
    # Gender_identity has no jsonl here: built from the template sheets
    gender = run_tasks(lm, tok, ["bbq"], settings, bias_types=["gender"], data_root=data_root)
    assert gender["task/bbq/n"] == 24 and "task/bbq/Gender_identity/s_dis" in gender
    # a bias type without BBQ data (an intersectional sheet is not built) yields no rows, not a crash
    from bias_ray.spec import BiasType

    none = BiasType(name="x", groups=["women"], bbq_categories=["Race_x_gender"])
    assert run_tasks(lm, tok, ["bbq"], settings, bias_types=[none], data_root=data_root)["task/bbq/n"] == 0


def test_cap_spreads_rows_evenly_and_is_deterministic(data_root):
    from bias_ray.evaluate.tasks import TaskContext

    ctx = TaskContext(data_root, EvaluationSpec(max_rows_per_task=6), [])
    rows = pd.DataFrame({"k": ["a"] * 10 + ["b"] * 3 + ["c"] * 20, "i": range(33)})
    capped = ctx.cap(rows, "k")
    assert capped["k"].value_counts().to_dict() == {"a": 2, "b": 2, "c": 2}
    assert capped.equals(ctx.cap(rows, "k"))


@pytest.mark.timeout(120)
def test_lm_scorer_prefix_and_training_mode(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bias_ray.measures.lm import LMScorer

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    model.train()
    plain, tagged = LMScorer(model, tok), LMScorer(model, tok, prompt_prefix="Muslims ")
    a, n = plain.loglik(["The man"], [" walked home"])
    b, _ = tagged.loglik(["The man"], [" walked home"])
    assert n[0] >= 1 and a[0] < 0 and a[0] != b[0]
    # batching and padding do not change a pair's score
    c, _ = plain.loglik(["The man", "A much longer prompt about a woman who"], [" walked home", " sat"])
    assert c[0] == pytest.approx(a[0], abs=1e-4)
    assert model.training and len(plain.generate(["Once"], max_new_tokens=4)) == 1 and model.training


def test_toxigen_rows_follow_the_specs_held_out_split(tmp_path, tiny_model, data_root):
    """The trial trains on the spec's train split, so the task must evaluate on the spec's test split only."""
    from bias_ray.data.loaders import load_toxigen
    from bias_ray.evaluate.tasks import _context
    from tests.conftest import micro_spec_dict

    spec = parse_spec(micro_spec_dict(tmp_path, tiny_model, data_root, data={"test_fraction": 0.5},
                                      evaluation={"max_rows_per_task": 1000}))
    ctx = _context(spec, None, None, 0)
    assert ctx.test_fraction == 0.5 and [b.name for b in ctx.bias_types] == ["religion"]
    rows = build_task("toxigen").rows(ctx)
    held_out = load_toxigen(data_root, 0.5, groups=["muslim", "jewish"])
    assert set(rows["id"]) == set(held_out.loc[held_out["split"] == "test", "id"])
