"""Precision and memory options of a trial: bf16, gradient accumulation, gradient checkpointing."""

from __future__ import annotations

import math

import pytest
import torch

from bias_ray.models.precision import grad_scaler
from bias_ray.spec import parse_spec
from bias_ray.train.trainable import accumulate_gradients, build_mitigation, build_student, fit
from tests.conftest import micro_spec_dict
from tests.test_planted_bias import planted_rows, write_augmented

CELL = {"bias_type": "religion", "bias_ratio": 0.5, "seed": 0}


def _spec(tmp_path, tiny_model, data_root, mitigation="none", models=None, evaluation=None, **training):
    d = micro_spec_dict(tmp_path, tiny_model, data_root, mitigations=[mitigation], bias_ratios=[0.5],
                        training={"train_size": 32, "batch_size": 16, "epochs": 1, "eval_every": 1,
                                  "max_length": 32, "max_eval_rows": 32, **training})
    if models:
        d["models"] = {**d["models"], **models}
    if evaluation:
        d["evaluation"] = evaluation
    write_augmented(d, planted_rows(data_root, n=40))
    return parse_spec(d, check_files=False)


def _grads(spec, rows, micro_batch, mitigation="none"):
    """Trainable gradients of one optimizer step over ``rows``, LoRA initialised from seed 0."""
    m = build_mitigation(spec, {**CELL, "mitigation": mitigation})
    torch.manual_seed(0)
    student, model = build_student(spec, m)
    model.train()
    loss = accumulate_gradients(model, student, m, rows, micro_batch, grad_scaler("cpu", student.dtype))
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind, mitigation", [("causal_lm", "token"), ("seq_cls", "none")])
def test_a_bf16_trial_trains_on_the_cpu_and_reports_finite_metrics(tmp_path, tiny_model, data_root, kind,
                                                                   mitigation):
    spec = _spec(tmp_path, tiny_model, data_root, mitigation, models={"dtype": "bfloat16"}, student_kind=kind,
                 evaluation={"tasks": ["crows_pairs"], "max_rows_per_task": 16})  # the downstream LM in bf16 too
    m = build_mitigation(spec, {**CELL, "mitigation": mitigation})
    student, model = build_student(spec, m)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    assert student.dtype == torch.bfloat16 and frozen == {torch.bfloat16} and trainable == {torch.float32}

    reports: list[tuple[dict, dict]] = []
    last = fit(spec, {**CELL, "mitigation": mitigation}, lambda metrics, s: reports.append((metrics, s)))
    assert [r[0]["step"] for r in reports] == [1, 2] and last["total_steps"] == 2
    for key in ("train_loss", "accuracy", "macro_f1", "task/crows_pairs/stereo_pref"):
        assert math.isfinite(last[key]), key
    first, final = reports[0][1]["model"], reports[-1][1]["model"]
    assert all(v.dtype == torch.float32 for v in final.values())  # master weights stay float32
    assert any(not torch.equal(first[k], final[k]) for k in final)  # it learns


def test_two_micro_batches_of_8_give_the_gradient_of_one_batch_of_16(tmp_path, tiny_model, data_root):
    spec = _spec(tmp_path, tiny_model, data_root, student_kind="causal_lm")  # no dropout: deterministic
    real = planted_rows(data_root, n=16, seed=3).assign(is_augmented=True)
    loss16, g16 = _grads(spec, real, 16)
    loss8, g8 = _grads(spec, real, 8)
    assert loss8 == pytest.approx(loss16, rel=1e-5)
    assert g16.keys() == g8.keys() and any(g.abs().sum() > 0 for g in g16.values())
    for name in g16:
        torch.testing.assert_close(g8[name], g16[name], rtol=1e-4, atol=1e-6, msg=name)
    # an uneven split (8 + 8 vs 5 + 5 + 5 + 1) weights each micro-batch by its rows
    loss5, g5 = _grads(spec, real, 5)
    assert loss5 == pytest.approx(loss16, rel=1e-5)
    for name in g16:
        torch.testing.assert_close(g5[name], g16[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_accumulation_keeps_steps_order_and_result_of_the_big_batch(tmp_path, tiny_model, data_root):
    """batch 8 x accumulation 2 is the same trial as batch 16: steps, reports, weights (to float tolerance)."""
    big = _spec(tmp_path / "big", tiny_model, data_root, student_kind="causal_lm", epochs=2, eval_every=2)
    small = _spec(tmp_path / "small", tiny_model, data_root, student_kind="causal_lm", epochs=2, eval_every=2,
                  batch_size=8, gradient_accumulation_steps=2)
    runs: dict[str, list[tuple[dict, dict]]] = {"big": [], "small": []}
    for name, spec in (("big", big), ("small", small)):
        fit(spec, {**CELL, "mitigation": "none"}, lambda metrics, s, out=runs[name]: out.append((metrics, s)))
    assert [m["step"] for m, _ in runs["big"]] == [m["step"] for m, _ in runs["small"]] == [2, 4]
    assert runs["big"][-1][0]["total_steps"] == runs["small"][-1][0]["total_steps"] == 4
    a, b = runs["big"][-1][1]["model"], runs["small"][-1][1]["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4, msg=k)
    assert runs["small"][-1][0]["train_loss"] == pytest.approx(runs["big"][-1][0]["train_loss"], rel=1e-3)


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path, tiny_model, data_root):
    rows = planted_rows(data_root, n=8, seed=5).assign(is_augmented=True)
    plain = _spec(tmp_path / "a", tiny_model, data_root, student_kind="causal_lm")
    ckpt = _spec(tmp_path / "b", tiny_model, data_root, student_kind="causal_lm", gradient_checkpointing=True)
    m = build_mitigation(ckpt, {**CELL, "mitigation": "none"})
    _, model = build_student(ckpt, m)
    assert any(getattr(mod, "gradient_checkpointing", False) for mod in model.modules())
    loss_a, ga = _grads(plain, rows, 8)
    loss_b, gb = _grads(ckpt, rows, 8)
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-5, atol=1e-7, msg=name)


def test_rows_per_step_sets_the_steps_of_a_trial(tmp_path, tiny_model, data_root):
    from bias_ray.train.sweep import trial_steps

    spec = _spec(tmp_path, tiny_model, data_root, batch_size=4, gradient_accumulation_steps=4, epochs=3)
    assert spec.training.rows_per_step == 16
    assert trial_steps(spec, 0.5) == 3 * math.ceil(32 / 16)
