"""Sample ids name what made a sample, not where it lay: the same model and data in another folder
give the same ids and texts, a moved job stays finished, and jobs written before keep their ids."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from bias_ray.augmented import load_augmented
from bias_ray.generate.pipeline import _plan_and_job, generate
from bias_ray.generate.prompts import load_template, make_plan, settings_fingerprint
from bias_ray.models import identity
from bias_ray.models.identity import folder_digest, model_identity
from bias_ray.spec import parse_spec
from tests.conftest import micro_spec_dict


def _copy(model, to):
    shutil.copytree(model, to)
    return to


def test_a_model_is_named_by_its_files_not_its_folder(tmp_path, tiny_model):
    a, b = _copy(tiny_model, tmp_path / "a" / "tiny"), _copy(tiny_model, tmp_path / "elsewhere" / "model")
    assert folder_digest(a) == folder_digest(b) and model_identity(a) == f"folder:{folder_digest(a)}"
    # files a loader does not read change nothing
    (b / "README.md").write_text("notes")
    (b / ".gitattributes").write_text("*.safetensors lfs")
    (b / "bias_ray_model.json").write_text(json.dumps({"trained_s": 12.3}))
    assert folder_digest(b) == folder_digest(a)
    # other weights are another model
    weights = b / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    assert folder_digest(b) != folder_digest(a)
    # a hub id (or a served name) names itself; a folder without model files is an error
    assert model_identity("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model files"):
        folder_digest(tmp_path / "empty")


def test_large_folders_are_hashed_once_until_a_file_changes(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("BIAS_RAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(identity, "CACHE_ABOVE_BYTES", 0)  # the tiny model counts as large here
    model = _copy(tiny_model, tmp_path / "m")
    first = folder_digest(model)
    assert json.loads((tmp_path / "cache" / "model_digests.json").read_text())[str(model.resolve())]["digest"] == first

    def no_reading(path):
        raise AssertionError(f"{path} was read again")

    with monkeypatch.context() as m:
        m.setattr(identity, "_file_sha256", no_reading)
        assert folder_digest(model) == first  # from the cache
        os.utime(model / "config.json", ns=(1, 1))  # a file changed (its mtime): hashed again
        with pytest.raises(AssertionError, match="read again"):
            folder_digest(model)
    assert folder_digest(model) == first  # same bytes, same digest
    (tmp_path / "cache" / "model_digests.json").write_text("{broken")  # a broken cache is only a cost
    assert folder_digest(model) == first


def test_fingerprint_is_the_same_in_any_folder(tmp_path, tiny_model, data_root):
    template = load_template()
    specs = [parse_spec(micro_spec_dict(tmp_path / where, _copy(tiny_model, tmp_path / where / "tiny"), data_root))
             for where in ("checkout", "moved")]
    assert settings_fingerprint(specs[0], template) == settings_fingerprint(specs[1], template)
    # the ids of jobs written before named the folder (the bug): they differ
    assert (settings_fingerprint(specs[0], template, by_path=True)
            != settings_fingerprint(specs[1], template, by_path=True))


def test_a_task_data_file_is_named_by_its_bytes(tmp_path, tiny_model, data_root):
    rows = pd.DataFrame({"text": [f"statement number {i} about people" for i in range(40)],
                         "label": [i % 2 for i in range(40)], "group": ["women", "men"] * 20})
    specs, gender = [], [{"name": "gender", "groups": ["women", "men"]}]
    for where in ("one", "two"):
        (tmp_path / where).mkdir()
        rows.to_csv(tmp_path / where / "mine.csv", index=False)
        specs.append(parse_spec(micro_spec_dict(tmp_path / where, tiny_model, data_root, bias_types=gender,
                                                data={"task": "file", "path": str(tmp_path / where / "mine.csv")})))
    os.utime(tmp_path / "two" / "mine.csv", ns=(7, 7))
    template = load_template()
    assert settings_fingerprint(specs[0], template) == settings_fingerprint(specs[1], template)
    rows.iloc[:-1].to_csv(tmp_path / "two" / "mine.csv", index=False)  # other data, other ids
    assert settings_fingerprint(specs[0], template) != settings_fingerprint(specs[1], template)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_another_folder_generates_the_same_texts_and_a_moved_job_stays_finished(tmp_path, tiny_model, data_root,
                                                                                ray_session):
    gen = {"samples_per_bias_type": 12, "batch_size": 6, "shard_rows": 6}
    first = parse_spec(micro_spec_dict(tmp_path / "first", _copy(tiny_model, tmp_path / "first" / "tiny"), data_root,
                                       generation=gen))
    generate(first, progress=False)
    second = parse_spec(micro_spec_dict(tmp_path / "second", _copy(tiny_model, tmp_path / "second" / "tiny"),
                                        data_root, generation=gen))
    generate(second, progress=False)
    a, b = (load_augmented(s).set_index("sample_id")[["text", "group"]].sort_index() for s in (first, second))
    pd.testing.assert_frame_equal(a, b)  # same ids, and the ids' seeds drew the same texts
    # the first checkout moved, its model with it: the finished job is still finished
    shutil.copytree(tmp_path / "first", tmp_path / "moved")
    moved = parse_spec(micro_spec_dict(tmp_path / "moved", tmp_path / "moved" / "tiny", data_root, generation=gen))
    assert moved.augmented_dir != first.augmented_dir
    before = {p: p.stat().st_mtime_ns for p in moved.augmented_dir.rglob("*") if p.is_file()}
    generate(moved, progress=False)
    assert {p: p.stat().st_mtime_ns for p in moved.augmented_dir.rglob("*") if p.is_file()} == before


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_job_written_before_resumes_with_its_own_ids(tmp_path, tiny_model, data_root, ray_session):
    spec = parse_spec(micro_spec_dict(tmp_path, tiny_model, data_root, generation={
        "engine": "null", "samples_per_bias_type": 12, "batch_size": 6, "shard_rows": 6}))
    out = spec.augmented_dir
    fresh_plan, fresh_job = _plan_and_job(spec, out)
    assert "model_identity" in fresh_job
    # job.json as the code before wrote it: the generator named by its path
    legacy_fingerprint = settings_fingerprint(spec, fresh_plan.template, by_path=True)
    assert legacy_fingerprint != fresh_plan.fingerprint
    old_job = {k: v for k, v in fresh_job.items() if k != "model_identity"} | {"fingerprint": legacy_fingerprint}
    out.mkdir(parents=True)
    (out / "job.json").write_text(json.dumps(old_job))
    plan, job = _plan_and_job(spec, out)
    assert plan.fingerprint == legacy_fingerprint and "model_identity" not in job
    generate(spec, progress=False)
    content_ids = make_plan(spec).rows(np.arange(plan.total))["sample_id"]  # what a new job would use
    shard_ids = set(load_augmented(spec)["sample_id"])
    assert shard_ids and shard_ids <= set(plan.rows(np.arange(plan.total))["sample_id"])
    assert not shard_ids & set(content_ids)
    generate(spec, progress=False)  # finished under its old ids: left as it is
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] == legacy_fingerprint


def test_a_job_written_before_whose_ids_did_not_change_goes_on(tmp_path, tiny_model, data_root):
    """A hub id or a served model named itself before too: such a job.json lacks only model_identity."""
    from bias_ray.generate.pipeline import GenerationJobError, _check_job

    spec = parse_spec(micro_spec_dict(tmp_path, tiny_model, data_root))
    out = spec.augmented_dir
    plan, job = _plan_and_job(spec, out)
    out.mkdir(parents=True)
    (out / "job.json").write_text(json.dumps({k: v for k, v in job.items() if k != "model_identity"}))
    again, old_job = _plan_and_job(spec, out)
    assert again.fingerprint == plan.fingerprint and "model_identity" not in old_job
    _check_job(out, old_job)  # accepted
    # other settings are refused, naming what changed and not the key the old job lacks
    other = parse_spec(micro_spec_dict(tmp_path, tiny_model, data_root, generation={"temperature": 0.3}))
    with pytest.raises(GenerationJobError, match=r"changed: fingerprint, sampling\)"):
        _check_job(out, _plan_and_job(other, out)[1])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_import_needs_no_generator(tmp_path, tiny_model, data_root, ray_session):
    from bias_ray.generate.imported import import_augmented

    empty = tmp_path / "not-a-model"
    empty.mkdir()
    spec = parse_spec(micro_spec_dict(tmp_path, tiny_model, data_root))
    rows = pd.DataFrame({"text": [f"imported statement {i}" for i in range(12)], "label": 1,
                         "group": "muslim", "bias_type": "religion"})
    import_augmented(spec, rows)
    spec.models.generator = str(empty)  # a generator folder that holds no model: never read for an import
    assert generate(spec, progress=False) == spec.augmented_dir
    assert len(load_augmented(spec)) == 12
