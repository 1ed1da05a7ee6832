"""A real pretrained encoder (all-MiniLM-L6-v2) as the student: it trains, HateCheck runs on its classifier, and
tasks that need a language-model head are refused before any work instead of scoring a random head."""

from __future__ import annotations

import pytest

from bias_ray.models.heads import has_lm_head
from bias_ray.models.packaged import packaged_path
from bias_ray.spec import SpecError, parse_spec
from bias_ray.train.sweep import check_student_tasks
from tests.conftest import micro_spec_dict
from tests.test_planted_bias import planted_rows, write_augmented

MINILM = "packaged:all-minilm-l6-v2"


def test_lm_heads_are_read_from_the_config(tiny_model, tmp_path):
    assert has_lm_head(str(packaged_path(MINILM))) is False
    assert has_lm_head(str(tiny_model)) is True
    assert has_lm_head("some-owner/not-cached-anywhere") is None  # not on this machine: not refused here
    assert has_lm_head(str(tmp_path / "m.gguf")) is True


def test_likelihood_tasks_on_an_encoder_student_are_refused_with_the_fix(tmp_path, tiny_model, data_root):
    d = micro_spec_dict(tmp_path, tiny_model, data_root)
    d["models"]["student"] = MINILM
    d["evaluation"] = {"tasks": ["hatecheck", "crows_pairs", "bbq"]}
    spec = parse_spec(d, check_files=False)
    assert spec.models.student == str(packaged_path(MINILM))  # packaged: resolved to the installed folder
    with pytest.raises(SpecError, match=r"crows_pairs, bbq score the student as a causal language model.*"
                                        r"has no language-model head.*hatecheck run on any student"):
        check_student_tasks(spec)
    d["evaluation"] = {"tasks": ["hatecheck"]}
    check_student_tasks(parse_spec(d, check_files=False))  # classifier tasks only: fine
    d["evaluation"] = {"tasks": ["crows_pairs"]}
    d["models"]["student"] = str(tiny_model)
    check_student_tasks(parse_spec(d, check_files=False))  # a causal LM: fine


def test_task_options_override_the_listing_and_must_name_listed_tasks(tmp_path, tiny_model, data_root):
    from bias_ray.evaluate.tasks import build_task

    assert build_task("hatecheck").options.get("max_rows") is None
    assert build_task("hatecheck", {"max_rows": 70}).options["max_rows"] == 70
    d = micro_spec_dict(tmp_path, tiny_model, data_root)
    d["evaluation"] = {"tasks": ["hatecheck"], "task_options": {"bbq": {"template_seed": 1}}}
    with pytest.raises(SpecError, match="task_options names bbq, not in evaluation.tasks"):
        parse_spec(d, check_files=False)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_minilm_trial_trains_and_runs_hatecheck_on_its_classifier(tmp_path, tiny_model, data_root):
    from bias_ray.train.trainable import build_mitigation, build_student, downstream_metrics, fit

    d = micro_spec_dict(tmp_path, tiny_model, data_root, bias_ratios=[0.5], mitigations=["token"],
                        training={"train_size": 32, "batch_size": 16, "epochs": 1, "eval_every": 1,
                                  "max_length": 32, "max_eval_rows": 32},
                        evaluation={"tasks": ["hatecheck"], "task_options": {"hatecheck": {"max_rows": 70}}})
    d["models"]["student"] = MINILM
    write_augmented(d, planted_rows(data_root, n=40))
    spec = parse_spec(d, check_files=False)
    cfg = {"bias_type": "religion", "bias_ratio": 0.5, "mitigation": "token", "seed": 0}
    reports: list[tuple[dict, dict]] = []
    last = fit(spec, cfg, lambda m, s: reports.append((m, s)))
    assert last["total_steps"] == 2 and 0 <= last["macro_f1"] <= 1
    assert any("classifier" in k for k in reports[-1][1]["model"])  # the new head is trained and checkpointed
    mitigation = build_mitigation(spec, cfg)
    student, model = build_student(spec, mitigation)
    assert type(model.base_model.model).__name__ == "BertForSequenceClassification"
    model.load_state_dict(reports[-1][1]["model"], strict=False)
    out = downstream_metrics(spec, model, student, mitigation, spec.bias_type("religion"), seed=0)
    # max_rows 70 over 8 groups (7 targets and the untargeted cases): 8 cases each, not all 3,728
    assert out["task/hatecheck/n"] == 64 and out["task/hatecheck/trained_classifier"] == 1
    assert 0 <= out["task/hatecheck/fpr"] <= 1


def test_a_scheduler_metric_the_trials_cannot_give_or_read_backwards_is_refused(tmp_path, tiny_model, data_root):
    from bias_ray.train.sweep import check_scheduler_metric

    d = micro_spec_dict(tmp_path, tiny_model, data_root)
    d["scheduler"] = {"name": "asha", "metric": "roc_auc", "mode": "max"}
    check_scheduler_metric(parse_spec(d, check_files=False))  # a 0/1 task: fine
    d["scheduler"]["mode"] = "min"
    with pytest.raises(SpecError, match=r"roc_auc: higher is better, but scheduler.mode is min.*mode: max"):
        check_scheduler_metric(parse_spec(d, check_files=False))
    d["scheduler"] = {"name": "asha", "metric": "log_loss", "mode": "max"}
    with pytest.raises(SpecError, match=r"log_loss: lower is better.*set scheduler.mode: min"):
        check_scheduler_metric(parse_spec(d, check_files=False))
    d["scheduler"] = {"name": "none", "metric": "log_loss", "mode": "max"}
    check_scheduler_metric(parse_spec(d, check_files=False))  # no scheduler: the metric only names the best
    d["scheduler"] = {"name": "asha", "metric": "roc_auc", "mode": "max"}
    spec = parse_spec(d, check_files=False)
    spec.data.labels = ["nurse", "surgeon", "teacher"]  # a task of named classes
    with pytest.raises(SpecError, match=r"roc_auc ranks P\(label 1\) of a 0/1 task, but data.labels names 3 classes"):
        check_scheduler_metric(spec)
