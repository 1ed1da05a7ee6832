"""Corrupt or truncated files on resume (issue 22): detected, moved aside with a reason, the work redone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import bias_ray.augmented.store as store
from bias_ray.generate.pipeline import _plan, generate
from bias_ray.spec import parse_spec
from bias_ray.train.trainable import STATE_FILE, load_state
from tests.conftest import micro_spec_dict

pytestmark = pytest.mark.timeout(300)


def null_spec(tmp_path, tiny_model, data_root, name="run"):
    return parse_spec(micro_spec_dict(tmp_path / name, tiny_model, data_root, bias_types=["religion", "gender"],
                                      generation={"engine": "null", "samples_per_bias_type": 40, "shard_rows": 10,
                                                  "batch_size": 10}, tracking={"wandb": "disabled"}))


def every_id_once(spec) -> list[str]:
    out = spec.augmented_dir
    ids = pd.concat([pd.read_parquet(p, columns=["sample_id"]) for p in sorted(out.glob("shards/part-*.parquet"))])
    plan = _plan(spec)
    assert ids["sample_id"].is_unique
    assert set(ids["sample_id"]) == set(plan.sample_ids(np.arange(plan.total)))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["generated"] == plan.total
    return sorted(ids["sample_id"])


def reasons(out) -> list[dict]:
    return [json.loads(line) for line in (out / "corrupt" / "reasons.jsonl").read_text().splitlines()]


def test_a_truncated_shard_is_set_aside_and_its_rows_regenerated(tmp_path, tiny_model, data_root, ray_session):
    spec = null_spec(tmp_path, tiny_model, data_root)
    out = generate(spec, progress=False)
    clean = every_id_once(spec)
    shard = sorted(out.glob("shards/part-*.parquet"))[3]
    assert shard.name.endswith("-n10.parquet")  # the row count is in the name
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a copy cut short
    generate(spec, progress=False)
    assert every_id_once(spec) == clean and not shard.exists()
    why = {e["file"]: e["reason"] for e in reasons(out)}
    assert why[f"shards/{shard.name}"].startswith("unreadable Parquet")
    assert why["manifest.json"].startswith("files it counted were broken")  # it counted the lost rows: rebuilt
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["last_run"]["prompts"] == 10  # only the lost shard's rows were generated again


def test_a_broken_manifest_job_or_row_directory_is_rebuilt(tmp_path, tiny_model, data_root, ray_session):
    spec = null_spec(tmp_path, tiny_model, data_root)
    out = generate(spec, progress=False)
    clean = every_id_once(spec)
    (out / "manifest.json").write_text('{"status": "compl')  # torn
    generate(spec, progress=False)
    assert every_id_once(spec) == clean
    (out / "kept_rows.parquet").write_bytes(b"PAR1 not really")
    generate(spec, progress=False)
    assert every_id_once(spec) == clean and pd.read_parquet(out / "kept_rows.parquet").shape[0] == len(clean)
    # job.json lost: the shards are checked against the plan's sample ids; a foreign one is set aside
    other = null_spec(tmp_path, tiny_model, data_root, name="other")
    other.generation.seed = 7  # another job: other sample ids
    generate(other, progress=False)
    foreign = sorted(other.augmented_dir.glob("shards/part-*.parquet"))[0]
    os.replace(foreign, out / "shards" / foreign.name)
    (out / "job.json").write_text("\x00\x00")
    generate(spec, progress=False)
    assert every_id_once(spec) == clean and json.loads((out / "job.json").read_text())["requested"] == 80
    why = {e["file"]: e["reason"] for e in reasons(out)}
    assert why["job.json"].startswith("not valid JSON")
    assert "are not this job's" in why[f"shards/{foreign.name}"]
    assert set(why) >= {"manifest.json", "kept_rows.parquet"}


def test_a_write_cut_short_leaves_the_old_file_and_no_half_file_is_read(tmp_path, tiny_model, data_root,
                                                                       ray_session, monkeypatch):
    spec = null_spec(tmp_path, tiny_model, data_root)
    out = spec.augmented_dir
    real_replace, calls = os.replace, {"n": 0}

    def dies_on_the_fourth_commit(src, dst):
        calls["n"] += 1
        if calls["n"] == 4 and str(dst).endswith(".parquet"):
            raise OSError(28, "No space left on device")  # the disk filled before the rename
        return real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", dies_on_the_fourth_commit)
    with pytest.raises(OSError, match="No space left"):
        generate(spec, progress=False)
    monkeypatch.setattr(store.os, "replace", real_replace)
    assert list(out.glob("shards/.part-*.tmp-*"))  # the half-written file stayed under its temporary name
    assert not (out / "manifest.json").exists()
    generate(spec, progress=False)
    every_id_once(spec)
    assert not list(out.rglob(".part-*.tmp-*"))
    # a JSON write cut short keeps the previous file whole
    manifest = (out / "manifest.json").read_text()
    monkeypatch.setattr(store.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        store.atomic_write_json(out / "manifest.json", {"status": "half"})
    assert (out / "manifest.json").read_text() == manifest


def test_a_broken_trial_checkpoint_trains_from_the_start_and_is_kept_aside(tmp_path):
    path = tmp_path / "checkpoint_000003" / STATE_FILE
    path.parent.mkdir()
    torch.save({"model": {}, "step": 3}, path)
    assert load_state(path, tmp_path / "corrupt", {"bias_type": "x", "seed": 0})["step"] == 3
    path.write_bytes(path.read_bytes()[:20])
    assert load_state(path, tmp_path / "corrupt", {"bias_type": "x", "bias_ratio": 0.5, "seed": 0}) is None
    (entry,) = [json.loads(x) for x in (tmp_path / "corrupt" / "reasons.jsonl").read_text().splitlines()]
    assert (tmp_path / "corrupt" / entry["copied_to"]).stat().st_size == 20 and entry["reason"]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_broken_tune_state_is_set_aside_and_the_grid_runs_anew_to_the_same_results(tmp_path, tiny_model, data_root,
                                                                                    ray_session):
    from bias_ray.train.sweep import experiment_path, run_sweep
    from tests.sweep_helpers import ready_spec

    spec, _ = ready_spec(tmp_path, tiny_model, data_root, tracking={"wandb": "disabled"},
                         training={"train_size": 32, "eval_every": 2, "max_eval_rows": 32})
    first = run_sweep(spec)
    experiment = experiment_path(spec)
    (state,) = Path(experiment).glob("experiment_state-*.json")
    state.write_text(state.read_text()[:200])  # torn mid-write
    again = run_sweep(spec, resume=True)
    cols = ["bias_type", "bias_ratio", "mitigation", "seed", "macro_f1"]
    pd.testing.assert_frame_equal(first[cols].reset_index(drop=True), again[cols].reset_index(drop=True))
    aside = Path(experiment) / "corrupt"
    (entry,) = [json.loads(x) for x in (aside / "reasons.jsonl").read_text().splitlines()]
    assert any(name.endswith(state.name) for name in entry["moved"]) and entry["reason"]


def test_the_shared_atomic_writes_leave_the_old_file_when_cut_short(tmp_path, monkeypatch):
    from bias_ray import files

    target = tmp_path / "results.csv"
    files.write_frame(pd.DataFrame({"a": [1, 2]}), target)
    before = target.read_bytes()

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        files.write_frame(pd.DataFrame({"a": [3]}), target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_other_settings_stop_the_job_before_any_file_is_judged(tmp_path, tiny_model, data_root, ray_session):
    from bias_ray.generate.pipeline import GenerationJobError

    spec = null_spec(tmp_path, tiny_model, data_root)
    out = generate(spec, progress=False)
    shards = sorted(p.name for p in out.glob("shards/part-*.parquet"))
    smaller = null_spec(tmp_path, tiny_model, data_root)
    smaller.generation.samples_per_bias_type = 20  # half the indices would now lie outside the plan
    with pytest.raises(GenerationJobError, match="other settings"):
        generate(smaller, progress=False)
    assert sorted(p.name for p in out.glob("shards/part-*.parquet")) == shards and not (out / "corrupt").exists()
