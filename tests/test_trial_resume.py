"""A trial killed mid-training resumes from its last checkpoint and ends exactly like an unkilled one."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from bias_ray.spec import dump_spec, parse_spec
from tests.conftest import micro_spec_dict
from tests.test_planted_bias import planted_rows, write_augmented

KILL_AFTER_STEP = 2


def flaky_trial(config: dict, spec_dict: dict, marker_dir: str) -> None:
    """The real trainable, whose worker process dies (``os._exit``) right after its first checkpoint."""
    import os
    import time

    from bias_ray.train.trainable import train_trial, tune_report

    marker = Path(marker_dir) / "killed"

    def report(metrics: dict, state: dict) -> None:
        tune_report(metrics, state)
        if config["kill"] and metrics["step"] >= KILL_AFTER_STEP and not marker.exists():
            marker.write_text(str(metrics["step"]))
            time.sleep(2)  # let the driver register the checkpoint, then die like a preempted node
            os._exit(1)

    train_trial(config, spec_dict, report=report)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_trial_resumes_from_checkpoint_with_same_steps_and_result(tmp_path, tiny_model, data_root, ray_session):
    from ray import cloudpickle, tune

    from bias_ray.train.trainable import STATE_FILE

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests/
    d = micro_spec_dict(tmp_path, tiny_model, data_root, mitigations=["token"], bias_ratios=[0.5],
                        training={"train_size": 48, "batch_size": 16, "epochs": 2, "eval_every": 2,
                                  "max_length": 32, "max_eval_rows": 32, "lora_dropout": 0.1})
    write_augmented(d, planted_rows(data_root, n=60))
    spec = parse_spec(d, check_files=False)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(flaky_trial, spec_dict=dump_spec(spec), marker_dir=str(tmp_path)),
                            {"cpu": 1}),
        param_space={"bias_type": "religion", "bias_ratio": 0.5, "mitigation": "token", "seed": 0, "cpus": 1,
                     "kill": tune.grid_search([False, True])},
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(name="resume", storage_path=str(tmp_path / "tune"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    grid = tuner.fit()
    results = {r.config["kill"]: r for r in grid}
    assert (tmp_path / "killed").read_text() == str(KILL_AFTER_STEP), "the kill was not injected"
    killed, clean = results[True], results[False]
    assert killed.error is None and clean.error is None
    total = clean.metrics["total_steps"]
    assert total == 6 and clean.metrics["step"] == total and clean.metrics["start_step"] == 0
    assert killed.metrics["step"] == total and killed.metrics["total_steps"] == total
    assert killed.metrics["start_step"] == KILL_AFTER_STEP  # resumed from the checkpoint, not from scratch
    for key in ("macro_f1", "accuracy", "train_loss", "bias_type/fpr_gap"):
        a, b = killed.metrics[key], clean.metrics[key]
        assert a == b or (math.isnan(a) and math.isnan(b)), key

    def final_state(result):
        with result.checkpoint.as_directory() as ckpt:
            return torch.load(Path(ckpt) / STATE_FILE, weights_only=False)

    a, b = final_state(killed), final_state(clean)
    assert a["step"] == b["step"] == total
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
