"""Kill a running sweep's driver, resume it, and check finished trials were not rerun."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bias_ray.train.sweep import experiment_path, grid_cells, run_sweep
from tests.sweep_helpers import kill_processes_under, ready_spec

REPO = Path(__file__).resolve().parents[1]


def trial_states(experiment_dir: Path) -> dict[str, str]:
    """Trial id -> status from Tune's latest saved experiment state."""
    files = sorted(glob.glob(str(experiment_dir / "experiment_state-*.json")))
    if not files:
        return {}
    try:
        data = json.loads(Path(files[-1]).read_text())
    except (json.JSONDecodeError, OSError):  # caught mid-write
        return {}
    states = [json.loads(entry[0]) for entry in data["trial_data"]]
    return {s["trial_id"]: s["status"] for s in states}


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_killed_sweep_resumes_without_rerunning_finished_trials(tmp_path, tiny_model, data_root, ray_session):
    spec, spec_path = ready_spec(
        tmp_path, tiny_model, data_root,
        bias_ratios=[0.0, 0.25, 0.5],
        resources={"max_concurrent_trials": 1},
        tracking={"wandb": "disabled"},
        # ~5 s a trial: with the micro spec's 3 steps a trial after the first took ~0.5 s, less than Tune's
        # state-save period, so the saved state could go from no trial finished to all three (a flaky CI run).
        training={"epochs": 20},
    )
    exp_dir = Path(experiment_path(spec))
    ray_tmp = tempfile.mkdtemp(prefix="brres", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_TMPDIR": ray_tmp, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, "-m", "bias_ray.cli", "sweep", str(spec_path)], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not any(s == "TERMINATED" for s in trial_states(exp_dir).values()):
            assert driver.poll() is None, "the sweep ended before it could be killed"
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.5)
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
        time.sleep(1)
        kill_processes_under(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    before = trial_states(exp_dir)
    finished = [t for t, s in before.items() if s == "TERMINATED"]
    assert finished and len(finished) < 3, before
    logs_before = {t: next(exp_dir.glob(f"*{t}*/result.json")).read_bytes() for t in finished}

    table = run_sweep(spec, resume=True)

    cells = {tuple(c.values()) for c in grid_cells(spec)}
    got = [tuple(r) for r in table[["bias_type", "bias_ratio", "mitigation", "seed"]].itertuples(index=False)]
    assert len(got) == len(cells) == 3 and set(got) == cells, got  # exactly one row per grid cell
    assert table["error"].isna().all()
    assert (table["steps_run"] == table["total_steps"]).all()
    for t in finished:  # a rerun would append results to the finished trial's log
        assert next(exp_dir.glob(f"*{t}*/result.json")).read_bytes() == logs_before[t], f"trial {t} was rerun"
    # Trials Tune had created before the kill continue under their ids (the grid's rest is created lazily).
    assert set(before) <= set(table["trial_id"]), "resume must continue the known trials, not start them anew"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_restores_a_trial_whose_named_checkpoint_tune_had_deleted(tmp_path, tiny_model, data_root,
                                                                         ray_session):
    """A driver killed after Tune deleted checkpoint n (num_to_keep=1) but before it saved the state that
    names n+1: the saved state names a checkpoint that is gone. Simulated on a finished sweep: its trial
    marked running again, and the checkpoint its state names moved to a newer name."""
    from bias_ray.train.checkpoint_repair import repair_missing_checkpoints

    spec, _ = ready_spec(tmp_path, tiny_model, data_root, bias_ratios=[0.5], tracking={"wandb": "disabled"})
    first = run_sweep(spec)
    assert first["error"].isna().all()
    exp_dir = Path(experiment_path(spec))
    state_file = sorted(exp_dir.glob("experiment_state-*.json"))[-1]
    state = json.loads(state_file.read_text())
    trial = json.loads(state["trial_data"][0][0])
    trial["status"] = "RUNNING"
    state["trial_data"][0][0] = json.dumps(trial)
    state_file.write_text(json.dumps(state))
    trial_dir = exp_dir / trial["relative_logdir"]
    (named,) = [p.name for p in trial_dir.glob("checkpoint_*")]
    newer = f"checkpoint_{int(named.split('_')[1]) + 1:06d}"
    (trial_dir / named).rename(trial_dir / newer)

    table = run_sweep(spec, resume=True)
    assert table["error"].isna().all(), table["error"].tolist()
    assert (table["steps_run"] == table["total_steps"]).all()
    assert (trial_dir / named).is_dir()  # the copy Tune restored from
    assert repair_missing_checkpoints(str(exp_dir)) == []  # finished again: nothing to repair
