"""Secrets (issue 22): keys given through the environment never reach a file a run writes, nor a submitted job."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from bias_ray import cluster
from tests.conftest import micro_spec_dict

FAKES = {"WANDB_API_KEY": "wandbfake" + "0" * 31, "HF_TOKEN": "hf_fakeTOKENneverWritten42",
         "AWS_SECRET_ACCESS_KEY": "awsFakeSecretNeverWritten/42", "AWS_ACCESS_KEY_ID": "AKIAFAKENEVERWRITTEN"}


@pytest.mark.parametrize("name", sorted(FAKES) + ["MY_DB_PASSWORD", "OPENAI_API_KEY"])
def test_submit_refuses_a_secret_in_the_jobs_runtime_env(name):
    with pytest.raises(ValueError, match=rf"--env {name}: a secret would be stored in the Ray job's runtime"):
        cluster.parse_env([f"{name}=value", "HF_HOME=/shared/hf"])
    assert cluster.parse_env(["HF_HOME=/shared/hf", "HF_HUB_OFFLINE=1"]) == {"HF_HOME": "/shared/hf",
                                                                              "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_no_file_a_run_writes_holds_a_secret(tmp_path, tiny_model, data_root, monkeypatch):
    from bias_ray.cli import app

    for name, value in FAKES.items():
        monkeypatch.setenv(name, value)
    spec = micro_spec_dict(tmp_path, tiny_model, data_root, bias_ratios=[0.5], tracking={"wandb": "offline"})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = CliRunner().invoke(app, ["run", str(path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    files = [f for f in (tmp_path / "run").rglob("*") if f.is_file()]
    assert len(files) > 20  # logs, job.json, manifest, shards, results, report, W&B's offline runs, Tune's files
    for f in files:
        data = f.read_bytes()
        for name, value in FAKES.items():
            assert value.encode() not in data, f"{name} in {f}"
    for value in FAKES.values():
        assert value not in out.output
