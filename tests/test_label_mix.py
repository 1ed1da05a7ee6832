"""``training.mix_labels: real`` end to end: a trial's mix keeps the real label shares; an unreachable
ratio stops the sweep before any trial, naming the ratio it can reach."""

from __future__ import annotations

import pytest

from bias_ray.spec import SpecError
from bias_ray.train.sweep import run_sweep
from bias_ray.train.trainable import _real_rows, check_mixes, fit, trial_data
from tests.sweep_helpers import ready_spec


@pytest.mark.timeout(300)
def test_a_trial_mix_keeps_the_real_label_shares(tmp_path, tiny_model, data_root, ray_session):
    spec, _ = ready_spec(tmp_path, tiny_model, data_root, bias_ratios=[0.25],
                         training={"train_size": 120, "mix_labels": "real"})
    check_mixes(spec)  # 0.25 is reachable: no error
    real = _real_rows(spec.data.model_dump_json())
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
