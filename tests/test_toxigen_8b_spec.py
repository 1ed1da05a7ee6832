"""sweeps/toxigen_8b.yaml: the 8B ToxiGen grid, and its dry run on a laptop without models, data or GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bias_ray.cli import app
from bias_ray.evaluate.tasks import TASKS
from bias_ray.spec import bias_type_catalog, load_spec
from bias_ray.train.sweep import plan

SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "toxigen_8b.yaml"
HUB_ID = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture()
def laptop(tmp_path, monkeypatch):
    """No data, an empty Hugging Face cache, no GPU: what a laptop that cloned the repo has."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("BIAS_RAY_DATA", str(tmp_path / "no-data-here"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_8b_spec_is_the_paper_scale_grid(laptop):
    spec = load_spec(SPEC, check_files=False)
    assert spec.models.generator == spec.models.student == HUB_ID and spec.models.dtype == "bfloat16"
    assert spec.generation.engine == "vllm" and spec.generation.chat
    demographic = [n for n in bias_type_catalog() if n not in ("gender_occupations", "culture")]
    assert [b.name for b in spec.bias_type_specs] == demographic  # the six demographic bias types
    assert spec.bias_ratios == [0.0, 0.1, 0.3, 0.5, 0.7, 0.9] and spec.seeds == [0, 1, 2]
    assert [m.name for m in spec.mitigation_specs] == ["none", "token", "mask", "loss"]
    # every registered downstream task but the paper's culture tasks, whose data a spec names (paper_culture.yaml)
    assert set(spec.evaluation.tasks) == set(TASKS.names()) - {"global_opinions", "cultural_sets"}
    assert spec.scheduler.name == "asha" and spec.resources.gpus_per_trial >= 1
    p = plan(spec)
    # 6 x 6 x 4 x 3 cells; at ratio 0 mask and loss copy none's result (6 bias types x 2 x 3 seeds)
    assert len(p.trials) == 6 * 6 * 4 * 3 - 6 * 2 * 3 and p.seconds_per_step_source == "resources.seconds_per_step"
    assert p.total_steps == len(p.trials) * 90  # 480 rows / (8 x 2 accumulated) = 30 steps x 3 epochs
    assert p.gpu_hours == pytest.approx(p.total_steps * spec.resources.seconds_per_step / 3600)


@pytest.mark.parametrize("offline", [False, True])
def test_the_8b_spec_dry_runs_on_a_laptop(laptop, monkeypatch, offline):
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = CliRunner().invoke(app, ["sweep", str(SPEC), "--dry-run"], env={"COLUMNS": "200"})
    text = " ".join(out.output.split())
    assert out.exit_code == 0, out.output
    assert "toxigen_8b: 396 trials (dry run), per bias ratio" in text
    assert "grid size 396; 35640 trial-steps at most (3564 Tune reports)" in text
    assert "at 3 s/step (resources.seconds_per_step): 29.70 trial-hours, 29.70 GPU-hours" in text
    for field in ("generator", "student"):
        assert f"models.{field}: hub id {HUB_ID} (not checked: hub id, resolved at run time" in text
    assert not (laptop / "no-data-here").exists()


def test_validate_on_a_laptop_offline_says_how_to_get_the_model(laptop, monkeypatch, data_root):
    monkeypatch.setenv("BIAS_RAY_DATA", str(data_root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = CliRunner().invoke(app, ["validate", str(SPEC)], env={"COLUMNS": "200"})
    text = " ".join(out.output.split())
    assert out.exit_code == 2
    assert f"models.student: {HUB_ID} is not in the local Hugging Face cache" in text
    assert f"HF_HOME={laptop / 'hf'}" in text and f"hf download {HUB_ID}" in text
