"""The sweep: a Ray Tune grid over bias_ratio x bias_type x mitigation x seed.

Results land in ``<output_dir>/tune/<name>`` (Tune's own layout, restorable) and one row per
grid cell in ``results.parquet`` / ``results.csv``.
"""

from __future__ import annotations

import math
import netrc
import os
from pathlib import Path
from typing import Any

import pandas as pd

from bias_ray.spec import SchedulerSpec, SweepSpec, dump_spec
from bias_ray.train.trainable import train_trial

GRID_KEYS = ["bias_type", "bias_ratio", "mitigation", "seed"]


def param_space(spec: SweepSpec) -> dict[str, Any]:
    from ray import tune

    return {
        "bias_type": tune.grid_search([b.name for b in spec.bias_type_specs]),
        "bias_ratio": tune.grid_search(list(spec.bias_ratios)),
        "mitigation": tune.grid_search([m.label for m in spec.mitigation_specs]),
        "seed": tune.grid_search(list(spec.seeds)),
        "cpus": spec.resources.cpus_per_trial,
    }


def build_scheduler(s: SchedulerSpec):
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, MedianStoppingRule

    if s.name == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=s.max_t, grace_period=s.grace_period,
                             reduction_factor=s.reduction_factor)
    if s.name == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", max_t=s.max_t,
                                  reduction_factor=s.reduction_factor)
    if s.name == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=s.grace_period)
    return None


def wandb_mode(setting: str) -> str:
    """``auto`` is online when the user is logged in (API key or netrc entry), else offline."""
    if setting != "auto":
        return setting
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    return "offline"


def callbacks(spec: SweepSpec) -> list:
    mode = wandb_mode(spec.tracking.wandb)
    if mode == "disabled":
        return []
    from ray.air.integrations.wandb import WandbLoggerCallback

    os.environ["WANDB_MODE"] = mode  # without it Ray's callback demands an API key even offline
    wandb_dir = spec.run_dir / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    return [
        WandbLoggerCallback(
            project=spec.tracking.project,
            group=spec.name,
            mode=mode,
            dir=str(wandb_dir),
            excludes=["cpus"],
            log_config=False,
        )
    ]


def max_concurrent(spec: SweepSpec) -> int:
    import ray

    if spec.resources.max_concurrent_trials:
        return spec.resources.max_concurrent_trials
    cpus = ray.available_resources().get("CPU", 1.0)
    by_cpu = int(cpus // spec.resources.cpus_per_trial)
    if spec.resources.gpus_per_trial:
        gpus = ray.available_resources().get("GPU", 0.0)
        by_cpu = min(by_cpu, int(gpus // spec.resources.gpus_per_trial))
    if by_cpu < 1:
        raise RuntimeError(
            f"the cluster has {cpus} CPUs and {ray.available_resources().get('GPU', 0)} GPUs free, too few for "
            f"one trial ({spec.resources.cpus_per_trial} CPU, {spec.resources.gpus_per_trial} GPU); "
            "lower resources.*_per_trial or add nodes"
        )
    return by_cpu


def can_resume(experiment_dir: Path) -> bool:
    """A sweep can resume once Tune has saved its experiment state (not merely created the folder)."""
    from ray import tune

    return tune.Tuner.can_restore(str(experiment_dir)) and any(experiment_dir.glob("experiment_state-*.json"))


def build_tuner(spec: SweepSpec, resume: bool = False):
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(train_trial, spec_dict=dump_spec(spec)),
        {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial},
    )
    path = spec.tune_dir / spec.name
    if resume and can_resume(path):
        callbacks(spec)  # sets W&B's mode for the restored callback
        return tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.scheduler.metric,
            mode=spec.scheduler.mode,
            scheduler=build_scheduler(spec.scheduler),
            max_concurrent_trials=max_concurrent(spec),
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(spec.tune_dir),
            callbacks=callbacks(spec),
            failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=1,
        ),
    )


def results_table(result_grid, spec: SweepSpec) -> pd.DataFrame:
    """One row per trial: grid cell, final and best metrics, steps, early stop, wall time, error."""
    metric, mode = spec.scheduler.metric, spec.scheduler.mode
    rows = []
    for result in result_grid:
        cfg = result.config or {}
        final = dict(result.metrics or {})
        history = result.metrics_dataframe
        row: dict[str, Any] = {k: cfg.get(k) for k in GRID_KEYS}
        for k, v in final.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("config/"):
                row[k] = v
        if history is not None and metric in history:
            row[f"best_{metric}"] = history[metric].max() if mode == "max" else history[metric].min()
        steps, total = final.get("step", 0), final.get("total_steps", math.inf)
        row["steps_run"] = steps
        row["stopped_early"] = result.error is None and steps < total
        row["error"] = None if result.error is None else str(result.error).splitlines()[0][:300]
        row["trial_path"] = result.path
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(GRID_KEYS).reset_index(drop=True) if not table.empty else table


def run_sweep(spec: SweepSpec, resume: bool = False) -> pd.DataFrame:
    """Run (or resume) the grid and write the results table."""
    from bias_ray.runtime import init_ray

    init_ray()
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    tuner = build_tuner(spec, resume=resume)
    grid = tuner.fit()
    table = results_table(grid, spec)
    write_results(table, spec.results_path)
    return table


def write_results(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    table.to_csv(path.with_suffix(".csv"), index=False)
