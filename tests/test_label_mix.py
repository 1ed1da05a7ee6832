"""``training.mix_labels: real`` end to end: a trial's mix keeps the real label shares; an unreachable
ratio stops the sweep before any trial, naming the ratio it can reach."""

from __future__ import annotations

import pytest

from bias_ray.mix.checks import check_mixes, real_rows
from bias_ray.spec import SpecError
from bias_ray.train.sweep import run_sweep
from bias_ray.train.trainable import fit, trial_data
from tests.sweep_helpers import ready_spec


@pytest.mark.timeout(300)
def test_a_trial_mix_keeps_the_real_label_shares(tmp_path, tiny_model, data_root, ray_session):
    spec, _ = ready_spec(tmp_path, tiny_model, data_root, bias_ratios=[0.25],
                         training={"train_size": 120, "mix_labels": "real"})
    check_mixes(spec)  # 0.25 is reachable: no error
    real = real_rows(spec.data.model_dump_json())
    real_share = real[real["split"] == "train"]["label"].mean()
    train, _ = trial_data(spec, "religion", 0.25, seed=0)
    assert len(train) == 120 and int(train["is_augmented"].sum()) == 30
    assert abs(int(train["label"].sum()) - 120 * real_share) <= 1
    pooled, _ = trial_data(spec.model_copy(update={"training": spec.training.model_copy(
        update={"mix_labels": "pooled"})}), "religion", 0.25, seed=0)
    assert pooled["label"].mean() > train["label"].mean()  # the all-hateful job shifts a pooled mix
    metrics = fit(spec, {"bias_type": "religion", "bias_ratio": 0.25, "mitigation": "none", "seed": 0},
                  lambda _metrics, _state: None)
    assert metrics["train_positive_share"] == pytest.approx(train["label"].mean())  # in the results table


@pytest.mark.timeout(300)
def test_an_unreachable_ratio_stops_the_sweep_before_any_trial(tmp_path, tiny_model, data_root, ray_session):
    spec, _ = ready_spec(tmp_path, tiny_model, data_root, bias_ratios=[0.0, 0.9],
                         training={"train_size": 120, "mix_labels": "real"})
    with pytest.raises(SpecError, match=r"bias type 'religion': bias ratio 0.9 .* at most ratio 0\.\d+"):
        run_sweep(spec)
    assert not spec.results_path.exists()


def test_the_reachable_ratio_is_the_smallest_real_over_augmented_label_share():
    from bias_ray.mix import reachable_ratio

    assert reachable_ratio({0: 41, 1: 59}, {1: 10}) == pytest.approx(0.59)  # an all-hateful job
    assert reachable_ratio({0: 0.4, 1: 0.6}, {0: 0.5, 1: 0.5}) == pytest.approx(0.8)  # label 0 runs out first
    assert reachable_ratio({0: 0.5, 1: 0.5}, {0: 1, 1: 1}) == 1.0
    assert reachable_ratio({0: 1.0}, {1: 1.0}) == 0.0  # a label the real data lacks


def test_the_generation_plan_says_which_labels_it_writes(tmp_path, tiny_model, data_root):
    from bias_ray.generate.prompts import planned_label_shares
    from bias_ray.spec import parse_spec
    from tests.conftest import micro_spec_dict

    spec = parse_spec(micro_spec_dict(tmp_path, tiny_model, data_root))
    assert planned_label_shares(spec) == {1: 1.0}  # stances: biased only
    mixed = parse_spec(micro_spec_dict(tmp_path, tiny_model, data_root,
                                       generation={"stances": {"biased": 3, "counter": 1}}))
    assert planned_label_shares(mixed) == {1: 0.75, 0: 0.25}
    template = tmp_path / "two_stances.yaml"  # a user's template without `counter`: left out, not a crash
    template.write_text("id: mine\nversion: 1\nstances:\n"
                        "  biased: {seed_label: 1, label: 1, header: 'h {group}:'}\n"
                        "  neutral: {seed_label: 0, label: 0, header: 'h {group}:'}\n")
    own = parse_spec(micro_spec_dict(tmp_path, tiny_model, data_root, generation={
        "template": str(template), "stances": {"biased": 1, "neutral": 1, "counter": 2}}))
    assert planned_label_shares(own) == {1: 0.5, 0: 0.5}


def test_an_unreachable_ratio_is_refused_before_generation_by_every_command_that_would_generate(
        tmp_path, tiny_model, data_root):
    import yaml
    from typer.testing import CliRunner

    from bias_ray.cli import app
    from tests.conftest import micro_spec_dict

    data = micro_spec_dict(tmp_path, tiny_model, data_root, bias_ratios=[0.0, 0.9],
                           training={"mix_labels": "real"})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    for command in (["validate"], ["generate"], ["run"]):
        result = CliRunner().invoke(app, [*command, str(path)])
        assert result.exit_code == 2, (command, result.output)
        assert "bias_ratios: [0.9] cannot be reached with training.mix_labels: real" in result.output
        assert "at most ratio 0.5" in result.output  # ToxiGen train's hateful share, ~0.59
    assert not (tmp_path / "run").exists()  # nothing generated, nothing written
    data["bias_ratios"] = [0.0, 0.25]
    path.write_text(yaml.safe_dump(data))
    assert CliRunner().invoke(app, ["validate", str(path)]).exit_code == 0
