"""A micro sweep through every stage, as a user runs it: `bias-ray run SPEC`.

The same run carries the secrets check (issue 22): fake W&B, HF and AWS keys in its environment appear in
no file it writes (logs, job.json, manifest, shards, results, report, W&B's offline runs, Tune's files)
and not in its output."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import micro_spec_dict
from tests.test_secrets import FAKES

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(600)  # the analysis included; generous for a loaded shared machine
def test_micro_sweep_every_stage(tmp_path, tiny_model, data_root):
    spec = micro_spec_dict(tmp_path, tiny_model, data_root,
                           evaluation={"tasks": ["crows_pairs", "bbq"], "max_rows_per_task": 40})
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIAS_RAY_PROGRESS": "0", **FAKES}
    proc = subprocess.run([sys.executable, "-m", "bias_ray.cli", "run", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=570)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    run = tmp_path / "run"
    # a quiet terminal: library output went to the run's log file
    shown, log = proc.stdout + proc.stderr, (run / "logs" / "bias-ray.log").read_text()
    for noise in ("core_worker.cc", "streaming_executor", "wandb:", "Checkpoint successfully created", "reinit",
                  "Trial status"):
        assert noise not in shown, noise
    assert "streaming_executor" in log and str(run / "logs" / "bias-ray.log") in "".join(shown.split())
    assert "sweep 2/2 trials done" in shown and "0 failed" in shown
    assert (run / "spec.json").is_file()  # what ran, for the report's summary
    # generation
    augmented = pd.read_parquet(run / "data" / "augmented" / "shards")
    assert len(augmented) == spec["generation"]["samples_per_bias_type"]
    assert set(augmented["bias_type"]) == {"religion"}
    # the misalignment analysis ran between generation and the sweep
    out = proc.stdout
    assert out.index("analysis in") < out.index("sweep 2/2 trials done")
    assert (run / "analysis" / "summary.csv").is_file() and (run / "analysis" / "misalignment_summary.png").is_file()
    assert json.loads((run / "analysis" / "analysis.json").read_text())["wall_s"] > 0
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
    # the report opens with the summary: what ran, what it found; misalignment beside harm; the CLI points to it
    md = (report / "report.md").read_text()
    assert md.index("## Summary") < md.index("### Findings") < md.index("## Headline")
    assert "- Grid: 1 bias type(s) (religion) x 2 bias ratio(s) (0, 0.5) x 1 mitigation config(s) (`none`)" in md
    assert "Headline fairness metric: `bias_type/fpr_gap`" in md and "Only one seed ran" in md
    assert re.search(r"- `religion`: under `none`, \d\.\d{3} \(n=1\) at ratio 0 and \d\.\d{3} \(n=1\) at ratio "
                     r"0\.5; the change, [+-]\d\.\d{3}, rests on 1 seed pair\(s\): not called an effect", md)
    harm = md[md.index("### Misalignment measures beside the harm"):]
    assert "| bias_type | value_gap | group_js | mmd | mmd_p | change |" in harm and "\n| religion | " in harm
    assert "s misalignment analysis" in md  # its compute
    assert proc.stdout.strip().splitlines()[-2:] == [
        f"report: {report / 'report.html'}",
        "No headline figure: the results have no task/hatecheck/target_fpr column. Add hatecheck to the spec's "
        "evaluation.tasks to measure the HateCheck false-positive rate on non-hateful cases that target each bias "
        "type's groups."]
    # no secret of the environment reached a file the run wrote, nor its output
    files = [f for f in run.rglob("*") if f.is_file()]
    assert len(files) > 20  # logs, job.json, manifest, shards, results, report, W&B's offline runs, Tune's files
    for f in files:
        data = f.read_bytes()
        for name, value in FAKES.items():
            assert value.encode() not in data, f"{name} in {f}"
    for value in FAKES.values():
        assert value not in shown
    print((report / "report.md").read_text()[:4000])
