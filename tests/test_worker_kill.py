"""A worker killed, not the driver (issue 22): SIGKILL of a generation actor or a trial's process mid-work.

Both run on the local Ray instance with real processes; Ray's actor table gives the victim's pid.
Ray Data restarts a dead actor and retries its block (its actors get ``max_restarts=-1`` and
``max_task_retries=-1``); Tune retries a trial whose process died from its last checkpoint
(``resources.max_failures``).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from bias_ray.spec import parse_spec
from tests.conftest import micro_spec_dict

pytestmark = [pytest.mark.slow]


def actor_pids(class_part: str) -> list[int]:
    """Pids of this Ray session's live actors whose class name holds ``class_part``.

    The GCS actor table, which ``ray.util.state.list_actors`` serves through the dashboard; the tests'
    local Ray runs without a dashboard (2 cores), so it is read directly."""
    import ray._private.state as gcs

    return [a["Pid"] for a in gcs.actors().values()
            if a.get("State") == "ALIVE" and class_part in (a.get("ActorClassName") or "") and a.get("Pid")]


def kill_when(ready, class_part: str, killed: list[int], deadline_s: float = 240) -> threading.Thread:
    """A thread that SIGKILLs one live actor whose class name holds ``class_part`` once ``ready()`` is true."""

    def run() -> None:
        end = time.time() + deadline_s
        while time.time() < end:
            if ready():
                pids = actor_pids(class_part)
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
            time.sleep(0.2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def texts(out) -> pd.DataFrame:
    parts = sorted(out.glob("shards/part-*.parquet"))
    return pd.concat([pd.read_parquet(p, columns=["sample_id", "text"]) for p in parts]).sort_values("sample_id")


@pytest.mark.timeout(600)
def test_a_generation_actor_killed_mid_batch_loses_and_repeats_nothing(tmp_path, tiny_model, data_root,
                                                                       ray_session):
    from bias_ray.generate.pipeline import _plan, generate

    gen = {"samples_per_bias_type": 120, "batch_size": 8, "shard_rows": 8, "max_new_tokens": 24, "concurrency": 1}
    spec = parse_spec(micro_spec_dict(tmp_path / "killed", tiny_model, data_root, generation=gen,
                                      tracking={"wandb": "disabled"}))
    out = spec.augmented_dir
    killed: list[int] = []
    watcher = kill_when(lambda: len(list(out.glob("shards/part-*.parquet"))) >= 2, "TransformersGenerator", killed)
    generate(spec, progress=False)
    watcher.join(5)
    assert killed, "no generation actor was found to kill"
    got = texts(out)
    plan = _plan(spec)
    assert got["sample_id"].is_unique and set(got["sample_id"]) == set(plan.sample_ids(np.arange(plan.total)))
    # the engine seeds sampling with a batch's first sample id, and a retried block is the same batch:
    # the texts equal an uninterrupted job's
    clean = parse_spec(micro_spec_dict(tmp_path / "clean", tiny_model, data_root, generation=gen,
                                       tracking={"wandb": "disabled"}))
    pd.testing.assert_frame_equal(got.reset_index(drop=True), texts(generate(clean, progress=False))
                                  .reset_index(drop=True))


@pytest.mark.timeout(600)
def test_a_trial_process_killed_mid_training_is_retried_from_its_checkpoint(tmp_path, tiny_model, data_root,
                                                                            ray_session):
    from bias_ray.train.sweep import experiment_path, run_sweep
    from tests.sweep_helpers import ready_spec

    overrides = dict(bias_ratios=[0.0, 0.5], tracking={"wandb": "disabled"},
                     training={"epochs": 8, "eval_every": 2},
                     resources={"max_failures": 1, "max_concurrent_trials": 1, "cpus_per_trial": 1})
    spec, _ = ready_spec(tmp_path / "killed", tiny_model, data_root, **overrides)
    experiment = experiment_path(spec)
    killed: list[int] = []

    def mid_training() -> bool:  # the first trial has a checkpoint and is still training
        from pathlib import Path

        return any(Path(experiment).glob("*ratio=0.0000*/checkpoint_0000*")) and not any(
            Path(experiment).glob("*ratio=0.0000*/checkpoint_00001[0-9]"))

    watcher = kill_when(mid_training, "ImplicitFunc", killed)
    table = run_sweep(spec)
    watcher.join(5)
    assert killed, "no trial process was found to kill"
    assert table["error"].isna().all() and (table["steps_run"] == table["total_steps"]).all()
    clean_spec, _ = ready_spec(tmp_path / "clean", tiny_model, data_root, **overrides)
    clean = run_sweep(clean_spec)
    cols = ["bias_ratio", "macro_f1", "train_loss", "steps_run"]
    pd.testing.assert_frame_equal(table[cols].reset_index(drop=True), clean[cols].reset_index(drop=True))
