"""kill -9 of a running `bias-ray generate`, then a rerun: no sample lost, none duplicated."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bias_ray.generate.pipeline import _plan, generate
from bias_ray.spec import parse_spec
from tests.conftest import micro_spec_dict

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _committed(out: Path) -> pd.Series:
    parts = sorted(out.glob("shards/part-*.parquet")) + sorted(out.glob("quarantine/part-*.parquet"))
    return pd.concat([pd.read_parquet(p, columns=["sample_id"]) for p in parts], ignore_index=True)["sample_id"]


@pytest.mark.timeout(420)
def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path, tiny_model, data_root, ray_session):
    spec_dict = micro_spec_dict(tmp_path, tiny_model, data_root, generation={
        "samples_per_bias_type": 160, "batch_size": 8, "shard_rows": 8, "max_new_tokens": 8, "concurrency": 1},
        tracking={"wandb": "disabled"})
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict))
    spec = parse_spec(spec_dict)
    out = spec.augmented_dir
    env = {**os.environ, "PYTHONPATH": str(REPO), "BIAS_RAY_PROGRESS": "0", "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    proc = subprocess.Popen([sys.executable, "-m", "bias_ray.cli", "generate", str(spec_path)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while len(list(out.glob("shards/part-*.parquet"))) < 3:
            assert proc.poll() is None, "generate exited before it could be killed"
            assert time.time() < deadline, "no shards appeared in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the driver, mid-run
        proc.wait(timeout=30)
    finally:
        time.sleep(1)
        with contextlib.suppress(ProcessLookupError):  # the local Ray it started shares its session: end it too
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / "manifest.json").exists(), "the job finished before the kill; make it longer"
    survived = {p: p.read_bytes() for p in out.glob("shards/part-*.parquet")}
    before = set(_committed(out))
    assert 0 < len(before) < 160

    generate(spec, progress=False)  # the rerun resumes

    manifest = json.loads((out / "manifest.json").read_text())
    ids = _committed(out)
    plan = _plan(spec)
    requested = set(plan.sample_ids(np.arange(plan.total)))
    assert len(requested) == 160
    assert int(ids.duplicated().sum()) == 0, "duplicated ids"
    assert len(requested - set(ids)) == 0, "lost ids"
    assert set(ids) == requested
    assert manifest["status"] == "complete" and manifest["last_run"]["resumed_from"] == len(before)
    assert manifest["last_run"]["prompts"] == 160 - len(before)
    assert all(p.read_bytes() == data for p, data in survived.items())  # finished shards were not redone
    assert not list(out.rglob(".part-*"))  # no half-written files left
