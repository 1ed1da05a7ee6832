"""Trials on two workers (issue 23): Ray Train inside the Tune trial, gloo on the CPU, the tiny model.

The same global batch and seed on 2 workers must give the 1-worker trial's answer (the gradients are averaged,
the loss mitigation's batch means and the mask's counters are global), a killed worker must cost only the steps
after the last checkpoint, and a trial that Tune stops must end its Train run.
"""

from __future__ import annotations

import time

import pytest

from bias_ray.spec import parse_spec
from tests.test_worker_kill import actor_pids, kill_when

pytestmark = [pytest.mark.slow]

ALIGN = {"name": "loss", "params": {"kind": "mean_alignment", "lambda": 1.0}}
# 96 rows, 16 a step: 6 optimizer steps, every step's rows split 8 + 8 over two workers
TRAINING = {"train_size": 96, "epochs": 1, "batch_size": 16, "eval_every": 2}
TOLERANCE = 1e-5  # float sums in another order (the all-reduce), nothing more


def one_worker_fit(two_worker_spec_path, label: str) -> dict:
    """The same cell trained in this process on one worker, on the two-worker sweep's data."""
    import yaml

    from bias_ray.train.trainable import fit

    data = yaml.safe_load(two_worker_spec_path.read_text())
    data["resources"] = {**data["resources"], "workers_per_trial": 1, "cpus_per_trial": 1}
    spec = parse_spec(data, check_files=False)
    cfg = {"bias_type": "religion", "bias_ratio": 0.5, "mitigation": label, "seed": 0, "cpus": 1}
    return fit(spec, cfg, lambda _m, _s: None)


@pytest.mark.timeout(600)
def test_two_workers_give_the_one_worker_answer_survive_a_killed_worker_and_stop_when_told(
        tmp_path, tiny_model, data_root, ray_session, monkeypatch):
    """One sweep of 3 two-worker trials: ratio 0 (mask and the alignment loss copy one trial there), stopped by
    the scheduler at its first report; the alignment loss at 0.5, compared with one worker; the mask at 0.5, one
    of its workers killed after its first checkpoint, resumed from it and compared with one worker."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from bias_ray.train import sweep
    from tests.sweep_helpers import ready_spec

    class StopRatioZero(FIFOScheduler):
        """ASHA's decision without its arithmetic: the ratio-0 trial stops at its first report."""

        def on_trial_result(self, tune_controller, trial, result):
            return TrialScheduler.STOP if trial.config["bias_ratio"] == 0 else TrialScheduler.CONTINUE

    monkeypatch.setattr(sweep, "build_scheduler", lambda *_a, **_k: StopRatioZero())
    spec, path = ready_spec(tmp_path, tiny_model, data_root, bias_ratios=[0.0, 0.5], mitigations=[ALIGN, "mask"],
                            training=TRAINING, tracking={"wandb": "disabled"},
                            resources={"cpus_per_trial": 2, "workers_per_trial": 2, "max_concurrent_trials": 1,
                                       "max_failures": 1})
    experiment = sweep.experiment_path(spec)
    killed: list[int] = []

    def mid_training() -> bool:  # the mask trial at 0.5 has its first checkpoint and has not finished
        from pathlib import Path

        return any(Path(experiment).glob("*cell=religion_0_5_mask*/checkpoint_000000")) and not any(
            Path(experiment).glob("*cell=religion_0_5_mask*/checkpoint_000002"))

    watcher = kill_when(mid_training, "RayTrainWorker", killed)
    table = sweep.run_sweep(spec)
    watcher.join(5)
    assert killed, "no Train worker was found to kill"
    assert table["error"].isna().all()
    trained = table[table["same_as"].isna()]
    assert len(trained) == 3 and (trained["trial_workers"] == 2).all()

    zero = trained[trained["bias_ratio"] == 0].iloc[0]
    assert zero["stopped_early"] and zero["steps_run"] < zero["total_steps"]
    deadline = time.time() + 30
    while actor_pids("RayTrainWorker") and time.time() < deadline:
        time.sleep(0.5)
    assert not actor_pids("RayTrainWorker"), "a finished or stopped trial's Train workers still run"

    half = trained[trained["bias_ratio"] == 0.5]
    assert (half["steps_run"] == half["total_steps"]).all()
    masked = half[half["mitigation_name"] == "mask"].iloc[0]
    assert masked["start_step"] > 0, "the killed trial started again from step 0, not from its checkpoint"
    for label in half["mitigation"]:
        one = one_worker_fit(path, label)
        two = half[half["mitigation"] == label].iloc[0]
        name = two["mitigation_name"]
        for key in ("train_loss", "macro_f1", "accuracy", "train_rows", "realised_ratio"):
            assert two[key] == pytest.approx(one[key], abs=TOLERANCE), (name, key)
        if name == "mask":  # its counters restarted with the resumed trial; its loss and metrics are checked
            continue
        stats = [k for k in one if k.startswith("mitigation/")]
        assert "mitigation/alignment" in stats
        for key in stats:  # over both workers' rows: the mean alignment and the rows it covered
            assert two[key] == pytest.approx(one[key], rel=1e-4, abs=TOLERANCE), (name, key)
