"""Secrets (issue 22): keys given through the environment never reach a submitted job.

(That they reach no file a run writes is checked on the end-to-end run, `tests/test_end_to_end.py`.)"""

from __future__ import annotations

import pytest

from bias_ray import cluster

FAKES = {"WANDB_API_KEY": "wandbfake" + "0" * 31, "HF_TOKEN": "hf_fakeTOKENneverWritten42",
         "AWS_SECRET_ACCESS_KEY": "awsFakeSecretNeverWritten/42", "AWS_ACCESS_KEY_ID": "AKIAFAKENEVERWRITTEN"}


@pytest.mark.parametrize("name", sorted(FAKES) + ["MY_DB_PASSWORD", "OPENAI_API_KEY"])
def test_submit_refuses_a_secret_in_the_jobs_runtime_env(name):
    with pytest.raises(ValueError, match=rf"--env {name}: a secret would be stored in the Ray job's runtime"):
        cluster.parse_env([f"{name}=value", "HF_HOME=/shared/hf"])
    assert cluster.parse_env(["HF_HOME=/shared/hf", "HF_HUB_OFFLINE=1"]) == {"HF_HOME": "/shared/hf",
                                                                              "HF_HUB_OFFLINE": "1"}
