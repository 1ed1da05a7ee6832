"""Trials on two workers (issue 23): Ray Train inside the Tune trial, gloo on the CPU, the tiny model.

The same global batch and seed on 2 workers must give the 1-worker trial's answer (the gradients are averaged,
the loss mitigation's batch means are global), a killed worker must cost only the steps after the last
checkpoint, and a trial that Tune stops must end its Train run. One trial tests all three: each Train run
costs about 30 s of start-up on 2 cores. The trial shards its student (``training.fsdp``), the path with more
to get wrong (every worker evaluates, the checkpoint is gathered); ``tests/test_fsdp.py`` runs ``fit`` on two
workers both ways without Ray.
"""

from __future__ import annotations

import time

import pytest

from bias_ray.spec import parse_spec
from tests.test_worker_kill import actor_pids, kill_when

pytestmark = [pytest.mark.slow]

ALIGN = {"name": "loss", "params": {"kind": "mean_alignment", "lambda": 1.0}}
# 96 rows, 16 a step: 6 optimizer steps, every step's rows split 8 + 8 over two workers
TRAINING = {"train_size": 96, "epochs": 1, "batch_size": 16, "eval_every": 2, "fsdp": True}
TOLERANCE = 1e-5  # float sums in another order (the all-reduce), nothing more


def one_worker_fit(two_worker_spec_path, label: str) -> list[dict]:
    """The same cell trained in this process on one worker, on the two-worker sweep's data: every report."""
    import yaml

    from bias_ray.train.trainable import fit

    data = yaml.safe_load(two_worker_spec_path.read_text())
    data["resources"] = {**data["resources"], "workers_per_trial": 1, "cpus_per_trial": 1}
    data["training"] = {**data["training"], "fsdp": False}
    spec = parse_spec(data, check_files=False)
    cfg = {"bias_type": "religion", "bias_ratio": 0.5, "mitigation": label, "seed": 0, "cpus": 1}
    reports: list[dict] = []
    fit(spec, cfg, lambda metrics, _state: reports.append(dict(metrics)))
    return reports


@pytest.mark.timeout(600)
def test_two_workers_give_the_one_worker_answer_survive_a_killed_worker_and_stop_when_told(
        tmp_path, tiny_model, data_root, ray_session, monkeypatch):
    """One two-worker trial of the alignment loss (its batch means span both workers): one of its workers is
    killed after the first checkpoint (step 2), the trial resumes from it, and the scheduler stops it at its next
    report (step 4 of 6). There it must equal a 1-worker trial, and no Train worker may be left."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from bias_ray.train import sweep
    from tests.sweep_helpers import ready_spec

    class StopAtStepFour(FIFOScheduler):
        """ASHA's decision without its arithmetic: the trial stops at its report of step 4."""

        def on_trial_result(self, tune_controller, trial, result):
            return TrialScheduler.STOP if result.get("step", 0) >= 4 else TrialScheduler.CONTINUE

    monkeypatch.setattr(sweep, "build_scheduler", lambda *_a, **_k: StopAtStepFour())
    spec, path = ready_spec(tmp_path, tiny_model, data_root, bias_ratios=[0.5], mitigations=[ALIGN],
                            training=TRAINING, tracking={"wandb": "disabled"},
                            resources={"cpus_per_trial": 2, "workers_per_trial": 2, "max_concurrent_trials": 1,
                                       "max_failures": 1})
    experiment = sweep.experiment_path(spec)
    killed: list[int] = []

    def mid_training() -> bool:  # the trial has its first checkpoint and not its second
        from pathlib import Path

        return any(Path(experiment).glob("*/checkpoint_000000")) and not any(
            Path(experiment).glob("*/checkpoint_000001"))

    watcher = kill_when(mid_training, "RayTrainWorker", killed)
    table = sweep.run_sweep(spec)
    watcher.join(5)
    assert killed, "no Train worker was found to kill"
    row = table.iloc[0]
    assert row["error"] is None or row["error"] != row["error"]  # None or NaN: no error
    assert row["trial_workers"] == 2
    assert row["start_step"] == 2, "the killed trial did not resume from its checkpoint at step 2"
    assert row["stopped_early"] and row["step"] == 4 < row["total_steps"]
    deadline = time.time() + 30
    while actor_pids("RayTrainWorker") and time.time() < deadline:
        time.sleep(0.5)
    assert not actor_pids("RayTrainWorker"), "a stopped trial's Train workers still run"

    one = next(r for r in one_worker_fit(path, row["mitigation"]) if r["step"] == 4)
    # the loss holds the alignment term, whose means span both workers: a per-worker mean would change it
    for key in ("train_loss", "macro_f1", "accuracy", "train_rows", "realised_ratio"):
        assert row[key] == pytest.approx(one[key], rel=1e-4, abs=TOLERANCE), key


def test_the_alignment_term_and_the_mask_counters_over_two_workers_are_the_one_batch_values():
    """In-process, no Ray: two "workers" each hold half a batch; their collective adds the other's sums (what
    an all-reduce does). The value must be the whole batch's, the two gradients must sum to its gradient, and
    the mask's merged counters must be the whole batch's."""
    import torch

    from bias_ray.train.collective import Collective
    from bias_ray.train.mitigations.loss import mean_representation_gap, worker_share
    from bias_ray.train.mitigations.mask import MaskMitigation

    torch.manual_seed(0)
    hidden = torch.randn(8, 5, 4, requires_grad=True)
    mask = torch.ones(8, 5)
    mask[:, 4] = 0
    augmented = torch.tensor([True, False, True, False, False, True, False, True])
    whole = mean_representation_gap(hidden, mask, augmented)
    (full_grad,) = torch.autograd.grad(whole, hidden)

    halves = [slice(0, 4), slice(4, 8)]

    def local_sums(part):  # [2H sums, 2 counts] of one half, as mean_representation_gap sends them
        m = mask[part].unsqueeze(-1)
        phi = (hidden[part] * m).sum(1) / m.sum(1)
        aug = augmented[part]
        return torch.cat([phi[~aug].sum(0), phi[aug].sum(0), (~aug).sum().reshape(1), aug.sum().reshape(1)]).detach()

    class Pair(Collective):
        def all_sum(self, tensor):
            return tensor + local_sums(halves[1 - self.rank]).float()

    grads, values = [], []
    for rank, part in enumerate(halves):
        value = mean_representation_gap(hidden[part], mask[part], augmented[part], Pair(rank, 2))
        values.append(float(value))
        share = worker_share(value, Pair(rank, 2))
        grads.append(torch.autograd.grad(share * 2, hidden)[0] / 2)  # x W back-propagated, then averaged
    assert values[0] == pytest.approx(float(whole), rel=1e-5) and values[1] == pytest.approx(float(whole), rel=1e-5)
    assert torch.allclose((grads[0] + grads[1]), full_grad, atol=1e-6)

    class Gathered(Collective):  # rank 0's view: both workers' counters
        def gather(self, obj):
            return [obj, {**obj, "masked_tokens": 6.0, "masked_rows": 2.0, "seen_tokens": 30.0}]

    m = MaskMitigation()
    m._stats = {"masked_tokens": 4.0, "masked_rows": 3.0, "masked_share": 0.4, "lexicon_terms": 9.0}
    m._seen_tokens = 10.0
    m.ctx = type("Ctx", (), {"collective": Gathered(0, 2)})()
    merged = m.merged_stats()
    assert merged["mitigation/masked_tokens"] == 10.0 and merged["mitigation/masked_rows"] == 5.0
    assert merged["mitigation/masked_share"] == pytest.approx(10.0 / 40.0)
    assert merged["mitigation/lexicon_terms"] == 9.0  # the same on every worker: not summed
