"""A micro sweep through every stage, as a user runs it: `bias-ray run SPEC`."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import micro_spec_dict

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_micro_sweep_every_stage(tmp_path, tiny_model, data_root):
    spec = micro_spec_dict(tmp_path, tiny_model, data_root,
                           evaluation={"tasks": ["crows_pairs", "bbq"], "max_rows_per_task": 40})
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIAS_RAY_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-m", "bias_ray.cli", "run", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    run = tmp_path / "run"
    # a quiet terminal: library output went to the run's log file
    shown, log = proc.stdout + proc.stderr, (run / "logs" / "bias-ray.log").read_text()
    for noise in ("core_worker.cc", "streaming_executor", "wandb:", "Checkpoint successfully created", "reinit",
                  "Trial status"):
        assert noise not in shown, noise
    assert "streaming_executor" in log and str(run / "logs" / "bias-ray.log") in "".join(shown.split())
    assert "sweep 2/2 trials done" in shown and "0 failed" in shown
    # generation
    augmented = pd.read_parquet(run / "data" / "augmented" / "shards")
    assert len(augmented) == spec["generation"]["samples_per_bias_type"]
    assert set(augmented["bias_type"]) == {"religion"}
    # sweep: one row per grid cell, finite metrics, exact realised ratios
    results = pd.read_parquet(run / "results.parquet")
    assert len(results) == 2
    assert sorted(results["bias_ratio"]) == [0.0, 0.5]
    assert results["error"].isna().all()
    for col in ("accuracy", "macro_f1", "bias_type/fpr_gap", "fpr_gap"):
        assert all(math.isfinite(v) for v in results[col]), col
    assert (results["realised_ratio"] == results["bias_ratio"]).all()
    assert (results["steps_run"] == results["total_steps"]).all()
    assert (run / "results.csv").exists()
    # downstream tasks ran at the end of every trial
    for col in ("task/crows_pairs/stereo_pref", "task/bbq/accuracy"):
        assert col in results and results[col].between(0, 1).all(), col
    # W&B offline runs, one per trial
    offline = [p.name for p in (run / "wandb").rglob("offline-run-*")]
    for trial_id in results["trial_id"]:
        assert sum(name.endswith(trial_id) for name in offline) == 1, (trial_id, offline)
    # report
    report = run / "report"
    assert (report / "report.md").exists() and (report / "report.html").exists()
    pngs = list(report.glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert "data:image/png;base64" in (report / "report.html").read_text()
