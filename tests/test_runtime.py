"""A local Ray: the user's environment reaches every worker without a runtime env; Ray Data warms up once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, os, ray
from bias_ray.runtime import init_ray, warm_ray_data

init_ray(num_cpus=2)
warm_ray_data(wait=True)
warm_ray_data(wait=True)  # once per process: a second call waits on the same warm-up

@ray.remote(num_cpus=0.5)
def task_env():
    return {k: os.environ.get(k) for k in ("HF_HOME", "HF_HUB_OFFLINE", "BIAS_RAY_MARK", "TOKENIZERS_PARALLELISM")}

@ray.remote(num_cpus=0.5)
class ActorEnv:
    def env(self):
        return os.environ.get("HF_HUB_OFFLINE")

stats = ray.get_actor("datasets_stats_actor", namespace="_dataset_stats_actor")
print("RESULT " + json.dumps({
    "task": ray.get(task_env.remote()),
    "actor": ray.get(ActorEnv.remote().env.remote()),
    "runtime_env": ray.get_runtime_context().runtime_env,
    "stats_actor": stats is not None,
}))
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_local_workers_inherit_the_environment_and_ray_data_is_warm(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "BIAS_RAY_MARK": "seen",
           "PYTHONPATH": str(ROOT), "BIAS_RAY_OBJECT_STORE_BYTES": str(1 << 28)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=170)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["task"] == {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "BIAS_RAY_MARK": "seen",
                              "TOKENIZERS_PARALLELISM": "false"}
    assert result["actor"] == "1"
    # no runtime env: tasks and actors may start on the workers Ray started ahead of time
    assert not result["runtime_env"].get("env_vars")
    assert result["stats_actor"]


def test_a_cluster_gets_the_hub_settings_as_a_runtime_env(monkeypatch):
    """Remote workers do not inherit the driver's environment: the settings travel (secrets never do)."""
    import ray

    from bias_ray import runtime

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "secret")
    runtime.init_ray(address="ray://head:10001")
    env_vars = seen["runtime_env"]["env_vars"]
    assert env_vars["HF_HUB_OFFLINE"] == "1" and "HF_TOKEN" not in env_vars
    assert seen["address"] == "ray://head:10001" and "num_cpus" not in seen


def _engine_spec(tmp_path, **generation):
    from bias_ray.spec import parse_spec

    return parse_spec({"name": "gpu", "output_dir": str(tmp_path), "models": {"generator": "org/model",
                       "student": "org/model"}, "bias_types": ["gender"], "bias_ratios": [0.5],
                       "mitigations": ["none"], "generation": generation, "tracking": {"wandb": "disabled"}},
                      check_files=False)


@pytest.mark.parametrize(("gpus", "generation", "device", "replicas"), [
    (4.0, {}, "cuda", 4),                            # one replica per GPU of the cluster
    (4.0, {"concurrency": 2}, "cuda", 2),            # unless the spec says how many
    (4.0, {"options": {"device": "cpu"}}, "cpu", 3),  # the user's choice of CPU holds
    (0.0, {}, "cpu", 3),                              # no GPU anywhere: a CPU pool, one CPU left free
])
def test_the_engine_asks_ray_for_gpus_not_the_driver(tmp_path, monkeypatch, gpus, generation, device, replicas):
    """A driver on a GPU-less head node still sends the engine to the cluster's GPUs."""
    import ray

    from bias_ray.generate.engines import transformers_engine

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0, "GPU": gpus} if gpus else {"CPU": 4.0})
    monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": 4.0})
    _, chosen, pool = transformers_engine.engine_settings(_engine_spec(tmp_path, **generation))
    assert (chosen, pool) == (device, replicas)


def test_vllm_replicas_default_to_what_the_cluster_gpus_hold(tmp_path, monkeypatch):
    import ray

    from bias_ray.generate.engines.vllm_engine import vllm_config

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 32.0, "GPU": 8.0})
    assert vllm_config(_engine_spec(tmp_path, engine="vllm", tensor_parallel_size=2)).concurrency == 4
    assert vllm_config(_engine_spec(tmp_path, engine="vllm", concurrency=3)).concurrency == 3
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 32.0})
    assert vllm_config(_engine_spec(tmp_path, engine="vllm")).concurrency == 1  # no GPU seen yet: one replica
