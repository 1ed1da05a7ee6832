"""Early stopping per group with a noise margin (train/early_stop.py) and the learning-rate schedule."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from bias_ray.spec import SpecError, parse_spec
from bias_ray.train import sweep
from bias_ray.train.early_stop import GroupedASHA, Rungs, rung_milestones
from bias_ray.train.trainable import lr_factor


def _spec(tmp_path, scheduler: dict, **training):
    return parse_spec({
        "name": "es", "output_dir": str(tmp_path / "run"),
        "models": {"generator": "tiny", "student": "tiny", "build_tiny_if_missing": True},
        "bias_types": ["religion"], "bias_ratios": [0.0, 0.5], "mitigations": ["none", "token"], "seeds": [0],
        "training": {"train_size": 160, "epochs": 1, "batch_size": 16, "eval_every": 1, **training},
        "scheduler": {"metric": "macro_f1", "mode": "max", **scheduler},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1},
        "tracking": {"wandb": "disabled"}, "evaluation": {"tasks": []},
    }, check_files=False)


# ---------------------------------------------------------------- the rule


@pytest.mark.parametrize("grace, max_t, eta", [(1, 10, 3), (2, 10, 3), (1, 10, 2), (1, 27, 3), (3, 40, 4)])
def test_rungs_decide_as_rays_asha_bracket_without_groups_or_margin(grace, max_t, eta):
    """Same milestones and the same STOP/CONTINUE as Ray's own bracket, on random interleaved reports."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    rng = np.random.default_rng(grace * 100 + max_t + eta)
    ray_bracket, ours = _Bracket(grace, max_t, eta, s=0), Rungs(grace, max_t, eta)
    assert [m for m, _ in ray_bracket._rungs] == rung_milestones(grace, max_t, eta) == [m for m, _ in ours.recorded]
    time = dict.fromkeys(range(12), 0)
    decisions = 0
    for _ in range(150):
        trial = int(rng.integers(12))
        time[trial] += 1
        value = float(rng.random())
        expected = ray_bracket.on_result(SimpleNamespace(trial_id=str(trial)), time[trial], value)
        assert ours.on_result(str(trial), time[trial], value) == expected
        decisions += expected == "STOP"
    assert decisions > 0  # the sequence exercised stops, not only continues


def test_a_trial_within_the_margin_of_the_cutoff_continues_and_one_beyond_it_stops():
    rungs = Rungs(1, 10, 2, stop_margin=0.05)  # cutoff at rung 1: the median of the values recorded there
    assert rungs.on_result("a", 1, 0.70) == "CONTINUE"
    assert rungs.on_result("b", 1, 0.66) == "CONTINUE"  # 0.70 - 0.66 < 0.05
    assert rungs.on_result("c", 1, 0.60) == "STOP"  # below the cutoff 0.68 by more than 0.05
    plain = Rungs(1, 10, 2)
    plain.on_result("a", 1, 0.70)
    assert plain.on_result("b", 1, 0.66) == "STOP"  # without the margin the same gap stops it


class _Controller:
    pass


def _trial(trial_id: str, **config):
    return SimpleNamespace(trial_id=trial_id, config=config)


def _run(scheduler: GroupedASHA, histories: dict[str, tuple[dict, list[float]]]) -> dict[str, int]:
    """Feed each trial's reports in turn (one trial at a time); returns the reports each trial made."""
    used = {}
    for trial_id, (config, history) in histories.items():
        trial = _trial(trial_id, **config)
        scheduler.on_trial_add(_Controller(), trial)
        for t, value in enumerate(history, start=1):
            result = {"training_iteration": t, "macro_f1": value}
            if scheduler.on_trial_result(_Controller(), trial, result) == "STOP":
                break
        scheduler.on_trial_complete(_Controller(), trial, result)
        used[trial_id] = t
    return used


SLOW_STARTER = {  # the token trial starts below both none trials and ends above them
    "none-0.0": ({"mitigation": "none"}, [0.60] * 10),
    "none-0.5": ({"mitigation": "none"}, [0.55] * 10),
    "token-0.0": ({"mitigation": "token"}, [0.40, 0.50, 0.60, 0.70, 0.75, 0.78, 0.80, 0.80, 0.80, 0.80]),
    "token-0.5": ({"mitigation": "token"}, [0.30] * 10),
}


def test_grouped_asha_compares_a_trial_only_with_its_own_group():
    plain = GroupedASHA(max_t=10, grace_period=1, reduction_factor=3, metric="macro_f1", mode="max")
    assert _run(plain, SLOW_STARTER)["token-0.0"] == 1  # compared with none's trials: stopped at the first rung
    grouped = GroupedASHA(max_t=10, grace_period=1, reduction_factor=3, group_by=["mitigation"], metric="macro_f1",
                          mode="max")
    used = _run(grouped, SLOW_STARTER)
    assert used["token-0.0"] == 10 and used["token-0.5"] == 1 and used["none-0.5"] == 1


def test_grouped_asha_mode_min_stops_the_larger_values():
    s = GroupedASHA(max_t=10, grace_period=1, reduction_factor=2, metric="loss", mode="min")
    s.on_trial_add(_Controller(), a := _trial("a"))
    s.on_trial_add(_Controller(), b := _trial("b"))
    assert s.on_trial_result(_Controller(), a, {"training_iteration": 1, "loss": 0.3}) == "CONTINUE"
    assert s.on_trial_result(_Controller(), b, {"training_iteration": 1, "loss": 0.9}) == "STOP"
    assert s.on_trial_result(_Controller(), a, {"training_iteration": 10, "loss": 0.1}) == "STOP"  # max_t reached


# ---------------------------------------------------------------- the spec and the sweep


def test_build_scheduler_picks_grouped_asha_for_group_by_or_a_margin(tmp_path):
    grouped = sweep.build_scheduler(_spec(tmp_path, {"name": "asha", "group_by": ["mitigation"]}).scheduler, 10)
    assert isinstance(grouped, GroupedASHA) and grouped._group_by == ["mitigation"]
    margin = sweep.build_scheduler(_spec(tmp_path, {"name": "asha", "stop_margin": 0.05}).scheduler, 10)
    assert isinstance(margin, GroupedASHA) and margin._stop_margin == 0.05
    plain = sweep.build_scheduler(_spec(tmp_path, {"name": "asha"}).scheduler, 10)
    assert type(plain).__name__ == "AsyncHyperBandScheduler"


@pytest.mark.parametrize("scheduler, words", [
    ({"name": "asha", "group_by": ["ratio"]}, ["group_by", "ratio", "bias_ratio"]),
    ({"name": "asha", "group_by": ["seed", "seed"]}, ["group_by", "twice"]),
    ({"name": "median", "group_by": ["mitigation"]}, ["asha", "median"]),
    ({"name": "asha", "stop_margin": -0.1}, ["stop_margin", "greater than or equal to 0"]),
])
def test_bad_early_stop_settings_fail_with_the_problem_named(tmp_path, scheduler, words):
    with pytest.raises(SpecError) as err:
        _spec(tmp_path, scheduler)
    for word in words:
        assert word in str(err.value)


def scripted_trial(config, spec_dict, report=None):
    """A trainable reporting :data:`SLOW_STARTER`'s history for its cell (no model)."""
    from ray import tune

    history = SLOW_STARTER[f"{config['mitigation']}-{config['bias_ratio']}"][1]
    for step, value in enumerate(history, start=1):
        tune.report({"macro_f1": value, "step": step, "total_steps": len(history)})


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_sweep_with_group_by_keeps_the_slow_starting_best_config(tmp_path, ray_session):
    """Live Tune: plain ASHA stops the slow starter; ASHA per mitigation runs it to the end."""
    tables = {}
    for name, extra in {"plain": {}, "grouped": {"group_by": ["mitigation"]}}.items():
        spec = _spec(tmp_path / name, {"name": "asha", "grace_period": 1, "reduction_factor": 3, **extra})
        table = sweep.run_sweep(spec, trainable=scripted_trial, verbose=0)
        tables[name] = table.set_index(["mitigation", "bias_ratio"])
    assert tables["plain"].loc[("token", 0.0), "iterations"] == 1
    assert tables["grouped"].loc[("token", 0.0), "iterations"] == 10
    assert tables["grouped"]["macro_f1"].idxmax() == ("token", 0.0)


# ---------------------------------------------------------------- the learning-rate schedule


def test_lr_factor_formulas():
    assert [lr_factor("constant", s, 10) for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert [lr_factor("linear", s, 10) for s in (0, 5, 9)] == pytest.approx([1.0, 0.5, 0.1])
    assert lr_factor("cosine", 5, 10) == pytest.approx(0.5) and lr_factor("cosine", 0, 10) == 1.0
    assert lr_factor("cosine", 9, 10) == pytest.approx((1 + math.cos(math.pi * 0.9)) / 2)
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor("step", 0, 10)


@pytest.mark.timeout(120)
def test_a_trial_steps_with_the_scheduled_learning_rate(tmp_path, tiny_model, data_root):
    from bias_ray.train.trainable import fit
    from tests.conftest import micro_spec_dict
    from tests.test_planted_bias import planted_rows, write_augmented

    d = micro_spec_dict(tmp_path, tiny_model, data_root, bias_ratios=[0.0],
                        training={"train_size": 48, "batch_size": 16, "epochs": 1, "eval_every": 1,
                                  "max_length": 32, "max_eval_rows": 16, "learning_rate": 0.01,
                                  "lr_schedule": "linear"})
    write_augmented(d, planted_rows(data_root, n=8))
    spec = parse_spec(d, check_files=False)
    lrs = []
    fit(spec, {"bias_type": "religion", "bias_ratio": 0.0, "mitigation": "none", "seed": 0},
        lambda m, s: lrs.append(s["optimizer"]["param_groups"][0]["lr"]))
    assert lrs == pytest.approx([0.01, 0.01 * 2 / 3, 0.01 / 3])  # step s of 3 ran at 0.01 * (1 - s/3)
