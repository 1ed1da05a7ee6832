"""A trial that fails for its own reasons (issue 22): a NaN loss or running out of memory. It is marked failed with
its error, the others finish, --resume retries only the failed ones, and a NaN loss stops a trial at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bias_ray.train.sweep import run_sweep
from tests.sweep_helpers import ready_spec


def counting_trainable(starts: Path, diverges: str = "token"):
    """``train_trial`` that logs each start; the trials of mitigation ``diverges`` get a NaN loss at step 1
    (as a learning rate far too high would give them)."""

    def trainable(config, spec_dict):
        import bias_ray.train.trainable as trainable_module

        with open(starts, "a") as f:
            f.write(json.dumps(config["mitigation"]) + "\n")
        real = trainable_module.accumulate_gradients
        if config["mitigation"] == diverges:
            trainable_module.accumulate_gradients = lambda *args, **kwargs: float("nan")
        if config["mitigation"] == "mask":  # a step that runs out of memory, as a too-large batch would

            def out_of_memory(*args, **kwargs):
                import torch

                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

            trainable_module.accumulate_gradients = out_of_memory
        try:
            trainable_module.train_trial(config, spec_dict)
        finally:  # Tune reuses the actor for the next trial
            trainable_module.accumulate_gradients = real

    return trainable


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_diverging_trial_fails_alone_with_its_error_and_resume_retries_only_it(tmp_path, tiny_model, data_root,
                                                                                ray_session):
    from bias_ray.report import build_report

    spec, _ = ready_spec(tmp_path, tiny_model, data_root, bias_ratios=[0.5], mitigations=["none", "token", "mask"],
                         resources={"max_failures": 0, "cpus_per_trial": 1, "max_concurrent_trials": 1},
                         tracking={"wandb": "disabled"})
    starts = tmp_path / "starts.txt"
    table = run_sweep(spec, trainable=counting_trainable(starts)).set_index("mitigation")
    failed = table.loc["token"]
    assert failed["error"].startswith("NonFiniteLoss: trial religion ratio=0.5 token seed=0: the training loss is "
                                      "nan at step 1; it stops here instead of training on"), failed["error"]
    assert "Lower training.learning_rate" in failed["error"]
    assert table.loc["mask", "error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert table.loc["none", "error"] is None or table.loc["none", "error"] != table.loc["none", "error"]
    assert table.loc["none", "steps_run"] == table.loc["none", "total_steps"]  # the other trial finished
    report = build_report(spec.run_dir)
    assert "NonFiniteLoss: trial religion" in (report / "report.md").read_text()  # in the report's failed table
    # --resume runs the failed trial again (it fails again: the loss is a function of its config) and not the other
    run_sweep(spec, resume=True, trainable=counting_trainable(starts))
    started = [json.loads(x) for x in starts.read_text().splitlines()]
    assert started.count("none") == 1 and started.count("token") == started.count("mask") == 2
