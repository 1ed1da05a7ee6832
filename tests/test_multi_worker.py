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


def one_worker_fit(two_worker_spec_path, label: str) -> list[dict]:
    """The same cell trained in this process on one worker, on the two-worker sweep's data: every report."""
    import yaml

    from bias_ray.train.trainable import fit

    data = yaml.safe_load(two_worker_spec_path.read_text())
    data["resources"] = {**data["resources"], "workers_per_trial": 1, "cpus_per_trial": 1}
    spec = parse_spec(data, check_files=False)
    cfg = {"bias_type": "religion", "bias_ratio": 0.5, "mitigation": label, "seed": 0, "cpus": 1}
    reports: list[dict] = []
    fit(spec, cfg, lambda metrics, _state: reports.append(dict(metrics)))
    return reports


@pytest.mark.timeout(600)
def test_two_workers_give_the_one_worker_answer_survive_a_killed_worker_and_stop_when_told(
        tmp_path, tiny_model, data_root, ray_session, monkeypatch):
    """One sweep of 2 two-worker trials: the alignment loss, stopped by the scheduler at its first report and
    compared there with one worker; the mask, one of its workers killed after its first checkpoint, resumed from
    it, and compared at the end with one worker."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from bias_ray.train import sweep
    from tests.sweep_helpers import ready_spec

    class StopTheLossTrial(FIFOScheduler):
        """ASHA's decision without its arithmetic: the loss trial stops at its first report."""

        def on_trial_result(self, tune_controller, trial, result):
            return TrialScheduler.STOP if "loss" in str(trial.config) else TrialScheduler.CONTINUE

    monkeypatch.setattr(sweep, "build_scheduler", lambda *_a, **_k: StopTheLossTrial())
    spec, path = ready_spec(tmp_path, tiny_model, data_root, bias_ratios=[0.5], mitigations=[ALIGN, "mask"],
                            training=TRAINING, tracking={"wandb": "disabled"},
                            resources={"cpus_per_trial": 2, "workers_per_trial": 2, "max_concurrent_trials": 1,
                                       "max_failures": 1})
    experiment = sweep.experiment_path(spec)
    killed: list[int] = []

    def mid_training() -> bool:  # the mask trial has its first checkpoint and has not finished
        from pathlib import Path

        return any(Path(experiment).glob("*mitigation=mask*/checkpoint_000000")) and not any(
            Path(experiment).glob("*mitigation=mask*/checkpoint_000002"))

    watcher = kill_when(mid_training, "RayTrainWorker", killed)
    table = sweep.run_sweep(spec).set_index("mitigation_name")
    watcher.join(5)
    assert killed, "no Train worker was found to kill"
    assert table["error"].isna().all() and (table["trial_workers"] == 2).all()

    aligned = table.loc["loss"]
    assert aligned["stopped_early"] and aligned["step"] == 2 < aligned["total_steps"]
    deadline = time.time() + 30
    while actor_pids("RayTrainWorker") and time.time() < deadline:
        time.sleep(0.5)
    assert not actor_pids("RayTrainWorker"), "a finished or stopped trial's Train workers still run"
    one = next(r for r in one_worker_fit(path, aligned["mitigation"]) if r["step"] == 2)
    stats = [k for k in one if k.startswith("mitigation/")]
    assert "mitigation/alignment" in stats
    for key in ("train_loss", "macro_f1", "accuracy", "train_rows", "realised_ratio", *stats):
        # over both workers' rows: the loss, the metrics, the mean alignment and the rows it covered
        assert aligned[key] == pytest.approx(one[key], rel=1e-4, abs=TOLERANCE), key

    masked = table.loc["mask"]
    assert masked["steps_run"] == masked["total_steps"]
    assert masked["start_step"] > 0, "the killed trial started again from step 0, not from its checkpoint"
    one = one_worker_fit(path, masked["mitigation"])[-1]
    for key in ("train_loss", "macro_f1", "accuracy", "train_rows", "realised_ratio"):
        assert masked[key] == pytest.approx(one[key], abs=TOLERANCE), key
