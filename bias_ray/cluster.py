"""Cluster submission through the Ray Jobs API: submit a spec, then follow its status and logs.

The job's working dir is a small staged folder: this ``bias_ray`` package, ``pyproject.toml`` and
the spec as ``spec.yaml``. Ray uploads it to the cluster, so the nodes run the same code as the
submitting machine and need only the dependencies (installed on the image, or ``pip`` extras).
Paths inside the spec are used as written: on a real cluster make ``output_dir`` and
``data.root`` paths the nodes share, and ``storage_path`` an ``s3://`` or ``gs://`` URI.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bias_ray.spec import check_models, load_spec

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
COMMANDS = ("run", "sweep", "generate")
FINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")
# torch is loaded before Ray and pyarrow: loaded after them inside a job driver, oneMKL intermittently
# failed with "Cannot load libtorch_cpu.so" (Ray 2.60, torch 2.13 CPU, seen on a loopback cluster).
ENTRYPOINT = "import sys, torch; from bias_ray.cli import app; sys.argv[0] = 'bias-ray'; app()"


def resolve_address(address: str | None) -> str:
    """The dashboard address: the argument, else $RAY_ADDRESS if it is http(s), else the local default."""
    if address:
        return address
    env = os.environ.get("RAY_ADDRESS", "")
    return env if env.startswith(("http://", "https://")) else DEFAULT_ADDRESS


def client(address: str | None = None):
    from ray.job_submission import JobSubmissionClient

    address = resolve_address(address)
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ConnectionError(
            f"cannot reach the Ray Jobs API at {address}: {err}. Give the head node's dashboard address "
            "(http://HEAD:8265) with --address or RAY_ADDRESS; the head needs ray[default] for the dashboard"
        ) from None


SECRET_MARKERS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "CREDENTIAL")


def is_secret(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret (WANDB_API_KEY, HF_TOKEN, AWS_SECRET_...)."""
    return any(marker in name.upper() for marker in SECRET_MARKERS)


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings to a dict, with an error naming a malformed pair or a secret.

    Ray stores a job's runtime environment and shows it in the dashboard and ``ray job list``, so a
    secret must reach the cluster another way: the nodes' own environment (the cluster YAML's
    ``setup_commands``/env, a Kubernetes Secret on the KubeRay pods), never ``--env``.
    """
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env {pair!r} is not KEY=VALUE")
        if is_secret(key):
            raise ValueError(f"--env {key}: a secret would be stored in the Ray job's runtime environment, which the "
                             "dashboard and `ray job list` show; set it in the cluster nodes' environment instead "
                             "(cluster/README.md, \"Secrets\")")
        out[key] = value
    return out


def stage_working_dir(spec_path: Path, dest: Path) -> Path:
    """Copy the package, pyproject and the spec (as ``spec.yaml``) into ``dest`` for upload."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PACKAGE_DIR, dest / "bias_ray", ignore=ignore)
    pyproject = PACKAGE_DIR.parent / "pyproject.toml"
    if pyproject.is_file():
        shutil.copy2(pyproject, dest / "pyproject.toml")
    shutil.copy2(spec_path, dest / "spec.yaml")
    return dest


def runtime_env(working_dir: Path, pip: list[str] | None = None, env: dict[str, str] | None = None) -> dict:
    renv: dict = {"working_dir": str(working_dir)}
    if pip:
        renv["pip"] = list(pip)
    if env:
        renv["env_vars"] = dict(env)
    return renv


def submit(
    spec_path: str | Path,
    address: str | None = None,
    command: str = "run",
    pip: list[str] | None = None,
    env: dict[str, str] | None = None,
    python: str = "python",
) -> str:
    """Submit ``bias-ray COMMAND spec.yaml`` as a Ray job; returns the job id."""
    if command not in COMMANDS:
        raise ValueError(f"command {command!r} cannot be submitted; allowed: {', '.join(COMMANDS)}")
    spec_path = Path(spec_path)
    spec = load_spec(spec_path, check_files=False)
    check_models(spec, str(spec_path), here=False)  # a malformed hub id fails here, not on the cluster
    jobs = client(address)
    job_id = f"bias-ray-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="bias-ray-job-") as tmp:
        staged = stage_working_dir(spec_path, Path(tmp))
        return jobs.submit_job(
            entrypoint=f"{python} -c {ENTRYPOINT!r} {command} spec.yaml",
            submission_id=job_id,
            runtime_env=runtime_env(staged, pip, env),
            metadata={"spec": spec.name, "command": command},
        )


def status(job_id: str, address: str | None = None) -> dict[str, str]:
    info = client(address).get_job_info(job_id)
    return {"status": str(info.status.value if hasattr(info.status, "value") else info.status),
            "message": info.message or ""}


def logs(job_id: str, address: str | None = None) -> str:
    return client(address).get_job_logs(job_id)


def wait(job_id: str, address: str | None = None, timeout_s: float = 3600, poll_s: float = 2.0) -> str:
    """Block until the job ends; returns its final status (SUCCEEDED, FAILED or STOPPED)."""
    jobs = client(address)
    deadline = time.time() + timeout_s
    while True:
        state = str(jobs.get_job_status(job_id).value)
        if state in FINAL_STATES:
            return state
        if time.time() > deadline:
            raise TimeoutError(f"job {job_id} still {state} after {timeout_s:.0f}s")
        time.sleep(poll_s)


def follow_logs(job_id: str, address: str | None = None) -> Iterator[str]:
    """Log chunks as the job writes them, until it ends (the cluster and job are checked first)."""
    jobs = client(address)
    jobs.get_job_info(job_id)

    def chunks() -> Iterator[str]:
        loop = asyncio.new_event_loop()
        stream = jobs.tail_job_logs(job_id).__aiter__()
        try:
            while True:
                try:
                    yield loop.run_until_complete(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.close()

    return chunks()
