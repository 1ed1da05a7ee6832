"""A trial that fails once is retried from its checkpoint and the sweep finishes; W&B logs offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bias_ray.train.sweep import run_sweep
from tests.sweep_helpers import ready_spec


def flaky_trainable(marker: Path, starts: Path):
    """``train_trial`` that raises right after its first report (once per sweep, keyed by ``marker``)."""

    def trainable(config, spec_dict):
        import ray.tune

        from bias_ray.train.trainable import train_trial

        with open(starts, "a") as f:
            f.write(json.dumps(config["bias_ratio"]) + "\n")
        real_report = ray.tune.report

        def report(metrics, checkpoint=None):
            real_report(metrics, checkpoint=checkpoint)
            if not marker.exists():
                marker.touch()
                raise RuntimeError("injected failure after the first checkpoint")

        ray.tune.report = report
        try:
            train_trial(config, spec_dict)
        finally:
            ray.tune.report = real_report

    return trainable


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_failed_trial_is_retried_from_checkpoint(tmp_path, tiny_model, data_root, ray_session):
    spec, _ = ready_spec(
        tmp_path, tiny_model, data_root,
        bias_ratios=[0.5],
        training={"eval_every": 1},
        resources={"max_failures": 1},
        tracking={"wandb": "offline", "tags": ["retry-test"]},
    )
    marker, starts = tmp_path / "failed_once", tmp_path / "starts.txt"
    table = run_sweep(spec, trainable=flaky_trainable(marker, starts))

    assert marker.exists(), "the injected failure never fired"
    assert len(starts.read_text().splitlines()) == 2, "the failed trial should have started exactly twice"
    assert len(table) == 1
    row = table.iloc[0]
    assert row["error"] is None or row["error"] != row["error"]  # None or NaN: no error
    assert row["steps_run"] == row["total_steps"] == 3
    # Resumed from the step-1 checkpoint: the history has each step once, not 1, 1, 2, 3.
    history = [json.loads(line)["step"] for line in (Path(row["trial_path"]) / "result.json").read_text().splitlines()]
    assert history == [1, 2, 3]

    # W&B offline: one run for the trial (tagged with its grid cell), one run holding the grid table.
    runs = sorted((spec.run_dir / "wandb" / "wandb").glob("offline-run-*"))
    trial_runs = [r for r in runs if row["trial_id"] in r.name]
    grid_runs = [r for r in runs if r not in trial_runs]
    assert len(trial_runs) == 1 and len(grid_runs) == 1, [r.name for r in runs]
    trial_log = next(trial_runs[0].glob("*.wandb")).read_bytes()
    for text in (b"bias_ratio=0.5", b"retry-test", b"micro"):  # tags and group
        assert text in trial_log
    assert list(grid_runs[0].glob("files/media/table/grid_*.table.json")), "grid table missing"
    assert (spec.run_dir / "results.csv").is_file() and (spec.run_dir / "sweep_summary.json").is_file()
