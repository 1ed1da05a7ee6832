"""A trial's student sharded over two workers (issue 23, ``training.fsdp``): torch FSDP2 on gloo, the tiny model.

Two processes run ``fit`` as two Ray Train workers would, in one gloo process group (no Ray: Ray Train's part is
tested in ``tests/test_multi_worker.py``). Sharded and unsharded (data parallel), the trial must give the
one-worker trial's answer; the sharded checkpoint is the one-worker format (a sharded trial resumes from it, and so
does a one-worker trial). The loss mitigation's counterfactual forward runs on every worker, also on one whose
rows hold no counterfactual: a sharded forward needs every worker, and a missing one hangs the trial (the
test's timeout catches that).
"""

from __future__ import annotations

import copy
import pickle
import socket
from pathlib import Path

import pytest

from bias_ray.spec import parse_spec
from tests.conftest import micro_spec_dict
from tests.test_planted_bias import planted_rows, write_augmented

LOSS = {"name": "loss", "params": {"lambda": 1.0}}  # JS divergence to the group-swapped text's output
# 96 rows, 16 a step: 6 optimizer steps; at ratio 0.1 few rows are augmented, so in many steps one worker has
# no counterfactual row and runs the stand-in forward
TRAINING = {"train_size": 96, "epochs": 1, "batch_size": 16, "eval_every": 2, "max_length": 32, "max_eval_rows": 48}
CELL = {"bias_type": "religion", "bias_ratio": 0.1, "mitigation": "loss(lambda=1.0)", "seed": 0, "cpus": 1}
KEYS = ("train_loss", "macro_f1", "accuracy", "train_rows", "trainable_params", "mitigation/divergence")
RESUMED_KEYS = KEYS[:-1]


def spec_dict(tmp_path: Path, tiny_model: Path, data_root: Path, workers: int, fsdp: bool) -> dict:
    d = micro_spec_dict(tmp_path, tiny_model, data_root, mitigations=[LOSS], bias_ratios=[0.1], training=TRAINING,
                        resources={"cpus_per_trial": workers, "workers_per_trial": workers},
                        # a downstream task at the last step: sharded, every worker runs its forwards
                        evaluation={"tasks": ["hatecheck"], "task_options": {"hatecheck": {"max_rows": 40}}})
    d["training"]["fsdp"] = fsdp
    return d


def worker(rank: int, world: int, port: int, specs: dict[str, dict], out: str) -> None:
    """One of two workers: each spec's fit from scratch; the sharded LoRA one again from its step-2 checkpoint."""
    import os

    import torch.distributed as dist

    from bias_ray.train.collective import Collective
    from bias_ray.train.mitigations.loss import LossMitigation
    from bias_ray.train.trainable import fit

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    idle = [0]
    stand_in = LossMitigation._idle_forward

    def counted(self, *args):
        idle[0] += 1
        return stand_in(self, *args)

    LossMitigation._idle_forward = counted
    found: dict[str, object] = {}
    for name, d in specs.items():
        spec = parse_spec(d, check_files=False)
        collective = Collective(rank, world, sharded=spec.training.fsdp)
        reports, states = [], {}

        def report(metrics, state, reports=reports, states=states):
            reports.append(dict(metrics))
            if state:  # a copy, as the checkpoint file is: the optimizer's own tensors train on
                states[state["step"]] = copy.deepcopy(state)

        fit(spec, CELL, report, collective=collective)
        found[name] = reports
        if name == "fsdp":
            found["fsdp_state_2"] = states.get(2)
            resumed: list[dict] = []
            fit(spec, CELL, lambda m, _s, resumed=resumed: resumed.append(dict(m)), _from_rank0(states.get(2)),
                collective)
            found["fsdp_resumed"] = resumed
    found["idle_forwards"] = idle[0]
    dist.destroy_process_group()
    Path(out, f"rank{rank}.pkl").write_bytes(pickle.dumps(found))


def _from_rank0(state: dict | None) -> dict:
    """Rank 0's checkpoint on every worker, as a resumed trial's workers get it (each gets Tune's checkpoint)."""
    import torch.distributed as dist

    box = [state]
    dist.broadcast_object_list(box, src=0)
    return copy.deepcopy(box[0])  # as if read from the file: loading must not alias the kept state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_sharded_trial_gives_the_one_worker_answer_and_its_checkpoint_resumes_anywhere(tmp_path, tiny_model,
                                                                                           data_root):
    import torch.multiprocessing as mp

    from bias_ray.train.trainable import fit

    one = spec_dict(tmp_path, tiny_model, data_root, workers=1, fsdp=False)
    write_augmented(one, planted_rows(data_root, n=60))
    full = spec_dict(tmp_path, tiny_model, data_root, workers=2, fsdp=True)
    full["training"]["finetune"] = "full"  # every weight trains, sharded
    specs = {"ddp": spec_dict(tmp_path, tiny_model, data_root, workers=2, fsdp=False),
             "fsdp": spec_dict(tmp_path, tiny_model, data_root, workers=2, fsdp=True), "fsdp_full": full}
    mp.spawn(worker, args=(2, free_port(), specs, str(tmp_path)), nprocs=2, join=True)
    ranks = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in (0, 1)]
    found = ranks[0]

    spec = parse_spec(one, check_files=False)
    reference, states = [], {}
    fit(spec, CELL, lambda m, s: (reference.append(dict(m)), states.__setitem__(s["step"], copy.deepcopy(s))))
    assert [r["step"] for r in reference] == [2, 4, 6]
    assert sum(r["idle_forwards"] for r in ranks) > 0, "no worker ever lacked a counterfactual row"

    def same(got: list[dict], want: list[dict], what: str, keys: tuple[str, ...] = KEYS) -> None:
        assert [r["step"] for r in got] == [r["step"] for r in want], what
        for g, w in zip(got, want):
            assert g.get("trial_workers") == 2, what
            for key in keys:
                assert g[key] == pytest.approx(w[key], rel=1e-4, abs=1e-5), (what, g["step"], key)

    for run in ("ddp", "fsdp"):
        for key in ("task/hatecheck/fpr", "task/hatecheck/fnr"):
            assert found[run][-1][key] == pytest.approx(reference[-1][key], abs=1e-6), (run, key)
    same(found["ddp"], reference, "data parallel")
    one_full = {**one, "training": {**one["training"], "finetune": "full"}}
    full_reference: list[dict] = []
    fit(parse_spec(one_full, check_files=False), CELL, lambda m, _s: full_reference.append(dict(m)))
    assert full_reference[-1]["trainable_params"] > 10 * reference[-1]["trainable_params"]  # all, not LoRA's
    same(found["fsdp_full"], full_reference, "sharded, full fine-tuning")
    same(found["fsdp"], reference, "sharded")
    # (the mitigation's mean divergence is a mean over the steps this process ran, on one worker as well)
    same(found["fsdp_resumed"], reference[1:], "sharded, resumed from its step-2 checkpoint", RESUMED_KEYS)
    assert found["fsdp_resumed"][-1]["start_step"] == 2
    assert all(r == {} for r in ranks[1]["fsdp"]), "only rank 0 reports metrics"

    # the sharded checkpoint is the one-worker format: the same names and shapes, and a one-worker trial resumes
    sharded, plain = found["fsdp_state_2"], states[2]
    assert sorted(sharded["model"]) == sorted(plain["model"]), sorted(set(sharded["model"]) ^ set(plain["model"]))
    for name, tensor in plain["model"].items():
        assert sharded["model"][name].shape == tensor.shape, name
        assert sharded["model"][name].numpy() == pytest.approx(tensor.numpy(), rel=1e-4, abs=1e-5), name
    assert sorted(sharded["optimizer"]["state"]) == sorted(plain["optimizer"]["state"])
    for i, held in plain["optimizer"]["state"].items():
        for key, value in held.items():
            assert sharded["optimizer"]["state"][i][key].numpy() == pytest.approx(value.numpy(), rel=1e-4, abs=1e-6), (
                i, key)
    resumed: list[dict] = []
    fit(spec, CELL, lambda m, _s: resumed.append(dict(m)), copy.deepcopy(sharded))
    for key in RESUMED_KEYS:
        assert resumed[-1][key] == pytest.approx(reference[-1][key], rel=1e-4, abs=1e-5), key


def test_fsdp_needs_two_workers_and_no_float16(tmp_path, tiny_model, data_root):
    from bias_ray.spec import SpecError

    with pytest.raises((SpecError, ValueError), match="set resources.workers_per_trial to 2 or more"):
        parse_spec(spec_dict(tmp_path, tiny_model, data_root, workers=1, fsdp=True), check_files=False)
    d = spec_dict(tmp_path, tiny_model, data_root, workers=2, fsdp=True)
    d["models"]["dtype"] = "float16"
    with pytest.raises((SpecError, ValueError), match="use bfloat16"):
        parse_spec(d, check_files=False)
    d = spec_dict(tmp_path, tiny_model, data_root, workers=2, fsdp=True)
    d["evaluation"] = {"tasks": ["hatecheck", "crows_pairs"]}
    with pytest.raises((SpecError, ValueError), match="the tasks crows_pairs score a language model.*in_trials: false"):
        parse_spec(d, check_files=False)
    d["evaluation"]["in_trials"] = False
    parse_spec(d, check_files=False)
    d = spec_dict(tmp_path, tiny_model, data_root, workers=1, fsdp=False)
    d["training"]["finetune"] = "full"
    d["mitigations"] = [{"name": "loss", "params": {"reference": "base"}}]
    with pytest.raises((SpecError, ValueError), match="reference `base` is the student without its LoRA adapters"):
        parse_spec(d, check_files=False)
