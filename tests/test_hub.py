"""Models by hub id or by folder: validation, offline mode, the HF cache, and what reaches Ray workers."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from bias_ray.models.hub import check_source, hub_cache_dir, source_kind
from bias_ray.spec import SpecError, check_models, parse_spec
from tests.conftest import micro_spec_dict

REPO_ID = "bias-ray-test/tiny-llama"
REVISION = "0123456789abcdef0123456789abcdef01234567"
ROOT = Path(__file__).resolve().parent.parent


def save_to_hub_cache(folder: Path, hub_cache: Path, repo_id: str, revision: str = REVISION) -> Path:
    """Lay ``folder`` out as huggingface_hub does: blobs by hash, a snapshot of links, ``refs/main``."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture()
def hf_home(tmp_path, monkeypatch) -> Path:
    """An empty HF_HOME, online (no offline variables) unless a test sets them."""
    home = tmp_path / "hf"
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    return home


def test_a_reference_is_a_folder_or_a_hub_id(tmp_path, tiny_model, hf_home):
    assert source_kind(str(tiny_model)) == "folder" and source_kind("./models/x") == "folder"
    assert source_kind("models/tiny", build_tiny_if_missing=True) == "folder"
    assert source_kind("meta-llama/Llama-3.1-8B-Instruct") == "hub"
    found = check_source(str(tiny_model))
    assert found.problem is None and found.note == f"folder {tiny_model} (config.json found)"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no config.json" in check_source(str(empty)).problem
    assert "does not exist" in check_source(str(tmp_path / "gone")).problem
    assert "not checked: not on this machine" in check_source(str(tmp_path / "gone"), here=False).note
    for bad in ("a/b/c", "owner/bad name", "owner/x--y", "nothing-but-a-name"):
        problem = check_source(bad).problem
        assert problem and "neither an existing folder nor a hub id" in problem, bad


def test_online_a_hub_id_is_checked_for_form_only_and_resolved_at_run_time(hf_home):
    found = check_source("meta-llama/Llama-3.1-8B-Instruct")
    assert found.kind == "hub" and found.problem is None
    assert "not checked: hub id, resolved at run time" in found.note and str(hf_home / "hub") in found.note
    assert hub_cache_dir() == hf_home / "hub"


def test_offline_a_hub_id_must_be_in_the_cache(tmp_path, tiny_model, hf_home, monkeypatch, data_root):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = check_source(REPO_ID)
    assert missing.problem and f"HF_HOME={hf_home}" in missing.problem and f"hf download {REPO_ID}" in missing.problem
    assert "not checked" in check_source(REPO_ID, here=False).note  # a dry run on a laptop still works
    snapshot = save_to_hub_cache(tiny_model, hf_home / "hub", REPO_ID)
    found = check_source(REPO_ID)
    assert found.problem is None and str(snapshot) in found.note
    # the spec: a hub id validates; its form errors are spec errors naming the field
    spec = parse_spec(micro_spec_dict(tmp_path, REPO_ID, data_root))
    assert spec.models.student == REPO_ID  # not turned into a path
    assert check_models(spec)[1] == f"models.student: hub id {REPO_ID} (in the local cache: {snapshot})"
    with pytest.raises(SpecError, match=r"models.student: 'bad/id/x' is neither"):
        parse_spec(micro_spec_dict(tmp_path, "bad/id/x", data_root))


def test_offline_mode_is_never_forced_and_hub_settings_reach_workers(monkeypatch):
    from bias_ray.runtime import hub_env, quiet_libraries

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    quiet_libraries()
    assert "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ
    monkeypatch.setenv("HF_HOME", "/shared/hf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_secret")
    env = hub_env()
    assert env["HF_HOME"] == "/shared/hf" and env["HF_HUB_OFFLINE"] == "1"
    assert "hf_secret" not in env.values()  # a runtime env is stored and shown by Ray: no secrets in it


OFFLINE_RUN = textwrap.dedent("""
    import json, sys
    from bias_ray.models import ensure_model
    from bias_ray.spec import check_models, load_spec

    spec = load_spec(sys.argv[1])                      # offline: fails unless the id is in the cache
    ensure_model(spec.models.student, spec.data.resolved_root, False)
    from bias_ray.generate.pipeline import generate     # the transformers engine's Ray actors load the id
    manifest = json.loads((generate(spec, progress=False) / "manifest.json").read_text())
    from bias_ray.train.trainable import fit
    last = fit(spec, {"bias_type": "religion", "bias_ratio": 0.5, "mitigation": "none", "seed": 0},
               lambda metrics, state: None)
    print("RESULT " + json.dumps({"notes": check_models(spec), "manifest": manifest,
                                  "last": {k: last[k] for k in ("step", "total_steps", "macro_f1", "train_loss")}}))
""")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_offline_a_model_cached_under_a_hub_id_runs_generation_and_a_trial(tmp_path, tiny_model, data_root):
    """A fresh process with HF_HOME in a temp folder and HF_HUB_OFFLINE=1, as a user would run it."""
    hf_home = tmp_path / "hf"
    save_to_hub_cache(tiny_model, hf_home / "hub", REPO_ID)
    spec = micro_spec_dict(tmp_path, REPO_ID, data_root, bias_ratios=[0.5],
                           generation={"samples_per_bias_type": 24, "max_new_tokens": 8, "batch_size": 12},
                           tracking={"wandb": "disabled"})
    spec["models"]["dtype"] = "float32"
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), BIAS_RAY_OBJECT_STORE_BYTES=str(1 << 29))
    proc = subprocess.run([sys.executable, "-c", "from bias_ray.runtime import init_ray; init_ray(num_cpus=2)\n"
                           + OFFLINE_RUN, str(tmp_path / "hub.yaml")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=360)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["notes"][0].startswith(f"models.generator: hub id {REPO_ID} (in the local cache: {hf_home}")
    manifest = result["manifest"]
    assert manifest["status"] == "complete" and manifest["model"] == REPO_ID and manifest["quarantined"] == 0
    assert manifest["generated"] == 24 and manifest["generated_tokens"] > 0
    last = result["last"]
    assert last["step"] == last["total_steps"] > 0 and math.isfinite(last["train_loss"])
