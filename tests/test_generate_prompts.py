"""Prompt plans, quality filters, engine configs and spec checks: fast, no Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bias_ray.augmented.finalize import find_duplicates
from bias_ray.data.loaders import load_toxigen
from bias_ray.generate.engines.http_engine import (
    api_key,
    completions_url,
    make_payload,
    parse_completion,
    payload_settings,
)
from bias_ray.generate.prompts import build_prompts, load_template, make_plan
from bias_ray.generate.quality import clean_generation, drop_reason
from bias_ray.spec import QualitySpec, SpecError, parse_spec
from tests.conftest import micro_spec_dict


@pytest.fixture(scope="module")
def seeds(data_root):
    rows = load_toxigen(data_root)
    return rows[rows["split"] == "train"]


def _spec(tmp_path, data_root, **generation):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")  # validation looks for a saved model; prompts never load it
    gen = {"samples_per_bias_type": 30, "stances": {"biased": 1, "neutral": 1, "counter": 1}, **generation}
    return parse_spec(micro_spec_dict(tmp_path, model, data_root, generation=gen,
                                      bias_types=["religion", "gender"]))


def test_prompts_are_deterministic_batch_independent_and_carry_provenance(tmp_path, data_root, seeds):
    spec = _spec(tmp_path, data_root)
    full = build_prompts(spec, seeds)
    assert len(full) == 60 and full["sample_id"].is_unique
    assert full.equals(build_prompts(spec, seeds))
    assert full.groupby(["bias_type", "stance"]).size().to_dict() == {
        (b, s): 10 for b in ("gender", "religion") for s in ("biased", "counter", "neutral")}
    # any subset in any order rebuilds the same rows: what a resumed, re-batched run relies on
    plan = make_plan(spec, seeds)
    picked = np.array([59, 3, 17, 0, 42])
    assert plan.rows(picked).reset_index(drop=True).equals(full.iloc[picked].reset_index(drop=True))
    assert plan.sample_ids(picked) == full["sample_id"].iloc[picked].tolist()
    # provenance: seed rows are real statements with the stance's label, about the group where it has such
    # statements, else about the bias type's other groups (ToxiGen has no neutral 'trans')
    template = load_template()
    by_id = seeds.set_index("id")
    for row in full.itertuples():
        assert row.template_id == template["id"] and row.template_version == template["version"]
        shots = row.seed_ids.split(",")
        assert len(shots) == spec.generation.few_shot
        wanted = template["stances"][row.stance]["seed_label"]
        assert set(by_id.loc[shots, "label"]) == {wanted}
        if ((seeds["group"] == row.group) & (seeds["label"] == wanted)).any():
            assert set(by_id.loc[shots, "group"]) == {row.group}
        else:
            assert set(by_id.loc[shots, "group"]) <= set(spec.bias_type(row.bias_type).groups) - {row.group}
        assert all(by_id.loc[s, "text"] in row.prompt for s in shots)
    assert full.loc[full["stance"] == "biased", "label"].eq(1).all()
    assert full.loc[full["stance"] != "biased", "label"].eq(0).all()


def test_sample_ids_hash_generation_settings(tmp_path, data_root, seeds):
    base = build_prompts(_spec(tmp_path, data_root), seeds)
    hotter = build_prompts(_spec(tmp_path, data_root, temperature=0.7), seeds)
    assert not set(base["sample_id"]) & set(hotter["sample_id"])
    more = build_prompts(_spec(tmp_path, data_root, samples_per_bias_type=60), seeds)
    assert set(base["sample_id"]) < set(more["sample_id"])  # growing a job keeps the ids already made


def test_template_without_a_requested_stance_is_rejected(tmp_path, data_root, seeds):
    spec = _spec(tmp_path, data_root)
    template = {"id": "t", "version": 1, "stances": {"biased": {"seed_label": 1, "label": 1, "header": "h {group}"}}}
    with pytest.raises(ValueError, match="no stance"):
        make_plan(spec, seeds, template)


def test_quality_filters_and_deterministic_dedup():
    q = QualitySpec(min_chars=5, max_chars=20)
    assert clean_generation("  - women are fine\nnext line") == "women are fine"
    assert drop_reason("", q) == "empty"
    assert drop_reason("abc", q) == "too_short"
    assert drop_reason("x" * 21, q) == "too_long"
    assert drop_reason("I cannot do it", q) == "refusal"
    assert drop_reason("a fine statement", q) == ""
    rows = pd.DataFrame({"sample_id": ["c", "a", "b", "d", "e"], "text": ["x", "x", "y", "x", "y"],
                         "drop_reason": ["", "", "", "too_short", ""]})
    dups = find_duplicates(rows.sample(frac=1, random_state=1))
    assert dict(zip(dups["sample_id"], dups["duplicate_of"])) == {"c": "a", "e": "b"}


def test_engine_names_come_from_the_registry(tmp_path, data_root):
    with pytest.raises(SpecError, match="unknown engine 'vlm'; allowed: http, null, transformers, vllm"):
        _spec(tmp_path, data_root, engine="vlm")
    with pytest.raises(SpecError, match="needs generation.endpoint"):
        _spec(tmp_path, data_root, engine="http")
    with pytest.raises(SpecError, match="must name an environment variable"):
        _spec(tmp_path, data_root, engine="http", endpoint="http://x/v1", api_key_env="sk-secret value")
    with pytest.raises(SpecError, match="template .* does not exist"):
        _spec(tmp_path, data_root, template=str(tmp_path / "nope.yaml"))


def test_an_engines_settings_belong_to_the_engine(tmp_path, data_root):
    """Each engine checks its own settings (its Params): in generation.options, or at the top of generation."""
    top = _spec(tmp_path, data_root, engine="http", endpoint="http://h:8/v1", max_retries=5)
    inside = _spec(tmp_path, data_root, engine="http", options={"endpoint": "http://h:8/v1", "max_retries": 5})
    assert top.generation.options == inside.generation.options == {"endpoint": "http://h:8/v1", "max_retries": 5}
    assert top.generation.settings.max_retries == 5 and top.generation.settings.http_client == "ray_llm"
    with pytest.raises(SpecError, match=r"engine vllm's settings \(generation.options\): endpoint: Extra inputs are "
                                        r"not permitted \(it takes tensor_parallel_size, max_model_len"):
        _spec(tmp_path, data_root, engine="vllm", options={"endpoint": "http://h:8/v1"})
    with pytest.raises(SpecError, match=r"generation.endpoint: unknown key"):  # not a transformers setting
        _spec(tmp_path, data_root, endpoint="http://h:8/v1")
    with pytest.raises(SpecError, match=r"\['max_retries'\] given twice"):
        _spec(tmp_path, data_root, engine="http", endpoint="http://h:8/v1", max_retries=1, options={"max_retries": 2})


def test_http_requests_and_replies(tmp_path, data_root, monkeypatch):
    spec = _spec(tmp_path, data_root, engine="http", endpoint="http://127.0.0.1:9/v1/", api_key_env="BR_TEST_KEY")
    assert completions_url(spec.generation.settings.endpoint) == "http://127.0.0.1:9/v1/completions"
    assert completions_url("http://h/v1/completions") == "http://h/v1/completions"
    monkeypatch.delenv("BR_TEST_KEY", raising=False)
    with pytest.raises(RuntimeError, match="BR_TEST_KEY"):
        api_key(spec)
    monkeypatch.setenv("BR_TEST_KEY", "k-123")
    assert api_key(spec) == "k-123"
    body = make_payload("p", "00000010abcd", payload_settings(spec))
    assert body["seed"] == 16 and body["max_tokens"] == spec.generation.max_new_tokens and "k-123" not in str(body)
    assert parse_completion({"choices": [{"text": " hi"}], "usage": {"completion_tokens": 2}}) == (" hi", 2, "")
    for broken in ({"choices": []}, {"error": "x"}, None, {"choices": [{"text": None}]}):
        text, tokens, error = parse_completion(broken)
        assert (text, tokens) == ("", 0) and error.startswith("malformed response")


def test_vllm_config_is_built_from_the_spec(tmp_path, data_root):
    pytest.importorskip("ray.data.llm")
    from bias_ray.generate.engines.vllm_engine import vllm_config

    spec = _spec(tmp_path, data_root, engine="vllm", batch_size=64, concurrency=3, tensor_parallel_size=2,
                 max_model_len=4096, options={"engine_kwargs": {"enable_prefix_caching": True}})
    config = vllm_config(spec)
    assert config.model_source == spec.models.generator
    assert config.engine_kwargs["tensor_parallel_size"] == 2
    assert config.engine_kwargs["max_model_len"] == 4096
    assert config.engine_kwargs["enable_prefix_caching"] is True
    assert (config.batch_size, config.concurrency) == (64, 3)
    assert config.should_continue_on_error is True


@pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("vllm") is None,
    reason="vLLM is not installed (it needs a CUDA GPU; `pip install .[gpu]` on a GPU node runs this test)",
)
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_vllm_processor_generates(tmp_path, data_root, tiny_model, ray_session):
    from bias_ray.augmented import load_augmented
    from bias_ray.generate.pipeline import generate

    spec = parse_spec(micro_spec_dict(tmp_path, tiny_model, data_root,
                                      generation={"engine": "vllm", "samples_per_bias_type": 16, "batch_size": 8,
                                                  "max_model_len": 256}))
    generate(spec, progress=False)
    assert len(load_augmented(spec)) > 0


def test_crows_pairs_template_seeds_stances_from_the_pairs(tmp_path, data_root):
    from bias_ray.data.loaders import load_crows_pairs
    from bias_ray.spec import RESOURCES

    spec = _spec(tmp_path, data_root, template=str(RESOURCES / "prompts" / "crows_pairs_statements.yaml"),
                 stances={"biased": 1, "counter": 1}, samples_per_bias_type=8)
    prompts = build_prompts(spec)
    pairs = load_crows_pairs(data_root).set_index("id")
    assert set(prompts["template_id"]) == {"crows_pairs_statements"}
    assert set(prompts["group"]) == {"religion", "gender"}  # the bias types' crows_categories
    for row in prompts.itertuples():
        for seed in row.seed_ids.split(","):
            pair_id, side = seed.rsplit(":", 1)
            assert side == ("stereo" if row.stance == "biased" else "anti")
            assert pairs.loc[pair_id, "bias_type"] == row.group
            assert pairs.loc[pair_id, "text" if side == "stereo" else "text_anti"] in row.prompt


def test_bbq_template_seeds_put_the_stereotyped_group_in_the_negative_role(tmp_path, data_root):
    from bias_ray.data.loaders import load_bbq_template_statements
    from bias_ray.spec import RESOURCES

    seeds = load_bbq_template_statements(data_root)
    assert {"Religion", "Nationality"} <= set(seeds["group"])
    # template 1 of the Religion sheet: the NAME1 person confesses to the bombing; Muslims are the stereotyped group
    bomb = seeds[seeds["text"].str.contains("bomb exploded") & seeds["text"].str.contains("Muslim")]
    biased = bomb[bomb["label"] == 1]["text"].iloc[0]
    counter = bomb[bomb["label"] == 0]["text"].iloc[0]
    assert "the Muslim person confessed" in biased
    assert "the Muslim person confessed" not in counter and "{{" not in biased + counter
    assert (seeds.groupby("label").size() == len(seeds) // 2).all()  # one consistent, one inconsistent story each

    (tmp_path / "config.json").write_text("{}")  # a stand-in model folder: prompts never load it
    spec = parse_spec(micro_spec_dict(tmp_path, tmp_path, data_root, bias_types=["religion"],
                                      generation={"template": str(RESOURCES / "prompts" / "bbq_stories.yaml"),
                                                  "stances": {"biased": 1, "counter": 1},
                                                  "samples_per_bias_type": 6}))
    prompts = build_prompts(spec)
    by_id = seeds.set_index("id")
    assert set(prompts["template_id"]) == {"bbq_stories"} and set(prompts["group"]) == {"Religion"}
    for row in prompts.itertuples():
        for seed in row.seed_ids.split(","):
            assert by_id.loc[seed, "label"] == (1 if row.stance == "biased" else 0)
            assert by_id.loc[seed, "text"] in row.prompt


def test_a_group_without_seeds_of_a_stance_borrows_that_label_from_its_bias_type_not_the_other_label(
        tmp_path, tiny_model, data_root):
    """ToxiGen has no neutral statement about trans people: a neutral prompt about them must not be seeded with
    their hateful statements (the row would be labelled neutral and carry hate)."""
    from bias_ray.data.loaders import load_toxigen
    from bias_ray.generate.prompts import make_plan
    from bias_ray.spec import parse_spec
    from tests.conftest import micro_spec_dict

    d = micro_spec_dict(tmp_path, tiny_model, data_root, bias_types=["gender"])
    d["generation"]["stances"] = {"biased": 0.5, "neutral": 0.5}
    plan = make_plan(parse_spec(d, check_files=False))
    real = load_toxigen(data_root).set_index("id")
    ids, _ = plan.pools[("trans", 0)]
    assert ids and set(real.loc[ids, "label"]) == {0}
    assert set(real.loc[ids, "group"]) <= {"women", "lgbtq"}
    hateful, _ = plan.pools[("trans", 1)]
    assert set(real.loc[hateful, "group"]) == {"trans"} and set(real.loc[hateful, "label"]) == {1}
