"""A real two-node Ray cluster on loopback: submit a micro sweep through Ray Jobs and find its results."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from bias_ray import cluster
from bias_ray.cli import app
from bias_ray.spec import parse_spec
from tests.conftest import micro_spec_dict
from tests.sweep_helpers import kill_processes_under

BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def node_ports(flags: list[str]) -> list[str]:
    """Distinct ports for every per-node server, so two nodes (and other Ray users) share one host."""
    return [f"--{flag}={port}" for flag, port in zip(flags, free_ports(len(flags)))]


AGENT_FLAGS = ["dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
               "metrics-export-port", "node-manager-port", "object-manager-port"]


@pytest.fixture
def loopback_cluster():
    """Head (1 CPU, dashboard for the Jobs API) plus one worker node (1 CPU); stopped in teardown."""
    temp = tempfile.mkdtemp(prefix="brcl", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    gcs_port, dash_port, client_port = free_ports(3)
    # A node's clean environment: the job's `python` is this interpreter, and the code it runs comes
    # from the job's working dir (no PYTHONPATH).
    env = {k: os.environ[k] for k in ("HOME", "USER", "LANG", "LC_ALL") if k in os.environ}
    env.update(PATH=f"{BIN}:{os.environ.get('PATH', '')}", RAY_TMPDIR=temp, RAY_AUTH_MODE="disabled")
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--object-store-memory=150000000",
              "--disable-usage-stats"]
    # Each node gets its own temp dir, as on separate hosts: a shared one lets the worker node's
    # runtime-env cleanup delete the job's working dir under the head node's driver.
    head = [str(BIN / "ray"), "start", "--head", f"--port={gcs_port}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}", f"--ray-client-server-port={client_port}",
            f"--temp-dir={temp}/h", *common, *node_ports(AGENT_FLAGS)]
    worker = [str(BIN / "ray"), "start", f"--address=127.0.0.1:{gcs_port}", f"--temp-dir={temp}/w", *common,
              *node_ports(AGENT_FLAGS)]
    try:
        for cmd in (head, worker):
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=180)
        yield f"http://127.0.0.1:{dash_port}"
    finally:
        kill_processes_under(temp)  # every process of this cluster names its temp dir; others' Ray is untouched
        time.sleep(1)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_submit_micro_sweep_to_two_node_cluster(tmp_path, tiny_model, data_root, loopback_cluster):
    from ray.util.state import list_nodes

    address = loopback_cluster
    alive = [n for n in list_nodes(address=address) if n.state == "ALIVE"]
    assert len(alive) == 2, alive

    data = micro_spec_dict(
        tmp_path, tiny_model, data_root,
        resources={"max_concurrent_trials": 2},  # one trial per node
        tracking={"wandb": "disabled"},
    )
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    spec = parse_spec(data)
    runner = CliRunner()  # the job runs every stage: generate, sweep, report
    out = runner.invoke(app, ["submit", str(spec_path), "--address", address, "--command", "run"])
    assert out.exit_code == 0, out.output
    job_id = next(w for w in out.output.split() if w.startswith("bias-ray-micro-"))

    final = cluster.wait(job_id, address=address, timeout_s=400)
    log = cluster.logs(job_id, address=address)
    assert final == "SUCCEEDED", log[-3000:]

    table = pd.read_parquet(spec.results_path)
    assert sorted(table["bias_ratio"]) == [0.0, 0.5]
    assert table["error"].isna().all()
    assert "max_iterations" in table, "the job must run the submitted (staged) code"

    status = runner.invoke(app, ["status", job_id, "--address", address])
    assert "SUCCEEDED" in status.output
    logs = runner.invoke(app, ["logs", job_id, "--address", address])
    assert str(spec.results_path) in logs.output.replace("\n", "")
    assert (spec.report_dir / "report.html").is_file()
