"""Helpers shared by the sweep, resume and cluster tests: a micro spec with its augmented data ready."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

import psutil
import yaml

from bias_ray.spec import SweepSpec, parse_spec
from tests.conftest import micro_spec_dict


@cache
def _generated(tiny_model: Path, data_root: Path) -> Path:
    """Run the real generation stage once per test process; later specs copy its output."""
    from bias_ray.generate.pipeline import generate

    tmp = Path(tempfile.mkdtemp(prefix="bias-ray-gen-"))
    spec = parse_spec(micro_spec_dict(tmp, tiny_model, data_root))
    return generate(spec)


def ready_spec(tmp_path: Path, tiny_model: Path, data_root: Path, **overrides) -> tuple[SweepSpec, Path]:
    """A micro spec (also written as YAML, returned) whose augmented data already exists; needs Ray up."""
    data = micro_spec_dict(tmp_path, tiny_model, data_root, **overrides)
    spec = parse_spec(data)
    shutil.copytree(_generated(tiny_model, data_root), spec.augmented_dir)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return spec, path


def kill_processes_under(marker: str) -> None:
    """SIGKILL the processes a test started whose command line names ``marker`` (its own Ray temp dir)."""
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid != os.getpid() and marker in " ".join(proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                proc.kill()
