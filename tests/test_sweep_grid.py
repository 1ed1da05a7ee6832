"""The sweep's pure parts: grid expansion, dry-run plan, schedulers, trial resources, results summary."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from bias_ray import cluster
from bias_ray.cli import app
from bias_ray.spec import SpecError, parse_spec
from bias_ray.train import sweep


def spec_of(tmp_path, **over):
    data = {
        "name": "grid",
        "output_dir": str(tmp_path / "run"),
        "models": {"generator": "tiny", "student": "tiny", "build_tiny_if_missing": True},
        "bias_types": ["religion", "gender"],
        "bias_ratios": [0.0, 0.5],
        "mitigations": ["none", {"name": "token", "grid": {"real_tag": ["<r>", "<real>"]}}],
        "seeds": [0, 1],
        "training": {"train_size": 100, "epochs": 2, "batch_size": 16, "eval_every": 5},
        **over,
    }
    return parse_spec(data, check_files=False)


def test_mitigation_grid_expands_into_labelled_configs(tmp_path):
    spec = spec_of(tmp_path)
    labels = [m.label for m in sweep.expand_spec(spec).mitigation_specs]
    assert labels == ["none", "token(real_tag=<r>)", "token(real_tag=<real>)"]
    cells = sweep.grid_cells(spec)
    assert len(cells) == spec.grid_size == 2 * 2 * 3 * 2
    assert len({tuple(c.values()) for c in cells}) == len(cells)
    # the trials' spec resolves every expanded label to its params
    assert sweep.expand_spec(spec).mitigation("token(real_tag=<r>)").params == {"real_tag": "<r>"}


def test_bad_grid_point_names_the_mitigation(tmp_path):
    spec = spec_of(tmp_path, mitigations=[{"name": "token", "grid": {"lambda": [0.1, 1.0]}}])
    with pytest.raises(SpecError, match=r"mitigation 'token': grid point token\(lambda=0.1\) is invalid"):
        sweep.expand_spec(spec)
    spec = spec_of(tmp_path, mitigations=[{"name": "token", "params": {"real_tag": "<r>"},
                                           "grid": {"real_tag": ["<a>"]}}])
    with pytest.raises(SpecError, match="both params and grid"):
        sweep.expand_spec(spec)
    with pytest.raises(SpecError, match="grid.real_tag: List should have at least 1 item"):
        spec_of(tmp_path, mitigations=[{"name": "token", "grid": {"real_tag": []}}])


def test_plan_counts_steps_reports_and_hours(tmp_path):
    spec = spec_of(tmp_path, training={"train_size": 100, "epochs": 2, "batch_size": 16, "eval_every": 5,
                                       "mix_mode": "fixed_real"})
    p = sweep.plan(spec, seconds_per_step=2.0)
    # fixed_real: ratio 0 -> 100 rows = 7 steps/epoch; ratio 0.5 -> 200 rows = 13 steps/epoch
    steps = dict(zip(p.trials["bias_ratio"], p.trials["steps"]))
    assert steps == {0.0: 14, 0.5: 26}
    assert set(p.trials["reports"]) == {3, 6}
    assert p.total_steps == 12 * 14 + 12 * 26
    assert p.trial_hours == pytest.approx(p.total_steps * 2.0 / 3600)
    assert p.gpu_hours == 0.0
    spec.resources.gpus_per_trial = 0.5
    assert sweep.plan(spec, 2.0).gpu_hours == pytest.approx(p.trial_hours * 0.5)


def test_dry_run_prints_grid_and_cost_without_running(tmp_path, data_root):
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "name": "dry", "output_dir": str(tmp_path / "run"), "data": {"root": str(data_root)},
        "models": {"generator": str(tmp_path / "m"), "student": str(tmp_path / "m"), "build_tiny_if_missing": True},
        "bias_types": ["religion"], "bias_ratios": [0.0, 0.5, 0.9], "mitigations": ["none", "token"],
        "training": {"train_size": 320, "epochs": 2, "batch_size": 16},
        "resources": {"gpus_per_trial": 1},
    }))
    out = CliRunner().invoke(app, ["sweep", str(path), "--dry-run", "--seconds-per-step", "3.6"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "grid size 6; 240 trial-steps" in text and "0.24 GPU-hours" in text
    assert not (tmp_path / "run").exists() and not (tmp_path / "m").exists()


@pytest.mark.parametrize("name, cls", [("asha", "AsyncHyperBandScheduler"), ("hyperband", "HyperBandScheduler"),
                                       ("median", "MedianStoppingRule"), ("none", "NoneType")])
def test_scheduler_from_spec(tmp_path, name, cls):
    spec = spec_of(tmp_path, scheduler={"name": name, "grace_period": 2, "reduction_factor": 3})
    s = sweep.build_scheduler(spec.scheduler, sweep.default_max_t(spec))
    assert type(s).__name__ == cls
    if name == "asha":
        assert s._max_t == 3 == sweep.default_max_t(spec)  # 14 steps / eval_every 5 -> 3 reports
        assert s._reduction_factor == 3 and s._brackets[0]._rungs[-1][0] == 2  # first rung at the grace period


def test_trial_resources_for_one_worker_or_a_train_run_of_several(tmp_path):
    from bias_ray.train.distributed import scaling_config
    from bias_ray.train.trainable import train_trial

    one = spec_of(tmp_path, resources={"gpus_per_trial": 0.25})
    assert sweep.trial_resources(one) == {"cpu": 1, "gpu": 0.25} and sweep.default_trainable(one) is train_trial
    assert sweep.trial_resources(spec_of(tmp_path, resources={"cpus_per_trial": 4, "gpus_per_trial": 2})) == {
        "cpu": 4, "gpu": 2}
    # several workers: the trial holds nothing; its Train run reserves the workers' placement group
    many = spec_of(tmp_path, resources={"cpus_per_trial": 8, "gpus_per_trial": 4, "workers_per_trial": 4,
                                        "placement_strategy": "SPREAD"})
    assert sweep.trial_resources(many) == {"cpu": 0, "memory": sweep.DRIVER_MEMORY}
    assert sweep.default_trainable(many).__name__ == "TrialOnWorkers"
    scaling = scaling_config(many)
    assert scaling.num_workers == 4 and scaling.use_gpu and scaling.placement_strategy == "SPREAD"
    assert scaling.resources_per_worker == {"CPU": 2.0, "GPU": 1.0}
    # the dry run and `submit` say what a trial spans and how many GPUs the grid holds at once
    capped = spec_of(tmp_path, resources={"cpus_per_trial": 8, "gpus_per_trial": 4, "workers_per_trial": 4,
                                          "max_concurrent_trials": 3})
    assert "spans 4 Ray Train workers of 2 CPU and 1 GPU each" in sweep.footprint(capped)
    assert "at most 3 trials at once: 12 GPUs held" in sweep.footprint(capped)
    assert sweep.footprint(one).startswith("a trial is one process with 1 CPU and 0.25 GPU")
    assert "data-parallel, each worker holding the whole student" in sweep.footprint(capped)
    sharded = spec_of(tmp_path, resources={"cpus_per_trial": 8, "gpus_per_trial": 4, "workers_per_trial": 4},
                      training={"fsdp": True}, evaluation={"tasks": ["hatecheck"]})
    assert "FSDP, the student sharded over the workers, 1/4 of it on each" in sweep.footprint(sharded)
    with pytest.raises(SpecError, match="whole GPUs per worker"):
        spec_of(tmp_path, resources={"gpus_per_trial": 3, "workers_per_trial": 2})


def test_storage_path_local_or_uri(tmp_path):
    assert sweep.storage_uri(spec_of(tmp_path)) == str(tmp_path / "run" / "tune")
    assert sweep.experiment_path(spec_of(tmp_path, storage_path="s3://bucket/sweeps/")) == "s3://bucket/sweeps/grid"
    assert sweep.storage_uri(spec_of(tmp_path, storage_path=str(tmp_path / "t"))) == str(tmp_path / "t")


def test_early_stop_summary_and_tags():
    table = pd.DataFrame({"iterations": [1, 3, 10], "max_iterations": [10, 10, 10], "steps_run": [4, 12, 40],
                          "total_steps": [40, 40, 40], "stopped_early": [True, True, False],
                          "error": [None, None, None]})
    s = sweep.early_stop_summary(table)
    assert (s["stopped_early"], s["iterations_used"], s["iterations_saved"], s["steps_saved"]) == (2, 14, 16, 64)
    assert s["iterations_share"] == pytest.approx(14 / 30)
    from bias_ray import tracking

    cell = {"bias_type": "gender", "bias_ratio": 0.5, "mitigation": "none", "seed": 0, "cpus": 1}
    assert tracking.cell_tags(cell, sweep.GRID_KEYS) == [
        "bias_type=gender", "bias_ratio=0.5", "mitigation=none", "seed=0"]
    assert tracking.wandb_mode("offline") == "offline" and tracking.wandb_mode("disabled") == "disabled"


def test_job_staging_and_bad_input(tmp_path):
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text("name: x\n")
    staged = cluster.stage_working_dir(spec_path, tmp_path / "stage")
    assert (staged / "spec.yaml").read_text() == "name: x\n"
    assert (staged / "bias_ray" / "cli.py").is_file() and not list(staged.rglob("__pycache__"))
    assert cluster.runtime_env(staged, ["peft"], {"A": "1"}) == {
        "working_dir": str(staged), "pip": ["peft"], "env_vars": {"A": "1"}}
    assert cluster.parse_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        cluster.parse_env(["oops"])
    with pytest.raises(ValueError, match="cannot be submitted"):
        cluster.submit(spec_path, command="report")
    assert cluster.resolve_address("http://h:8265") == "http://h:8265"
