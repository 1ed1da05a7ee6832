"""generation.chat: few-shot prompts as chats, on each engine, with a tiny tokenizer that has a chat template."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bias_ray.generate.chat import ChatTemplateMissing, chat_messages
from bias_ray.generate.engines.http_engine import completions_url, make_payload, parse_completion, payload_settings
from bias_ray.generate.prompts import build_prompts, load_template
from bias_ray.models.tiny import add_chat_template
from bias_ray.spec import SpecError, parse_spec
from tests.conftest import micro_spec_dict

SYSTEM = "You write short example sentences for a dataset."


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory, tiny_model):
    """The tiny model with a chat template on its tokenizer (an 'instruction-tuned' tiny model)."""
    folder = tmp_path_factory.mktemp("models") / "tiny-chat"
    shutil.copytree(tiny_model, folder)
    return add_chat_template(folder)


def _spec(tmp_path, model, data_root, **generation):
    gen = {"samples_per_bias_type": 8, "batch_size": 4, "shard_rows": 4, "max_new_tokens": 6, "chat": True,
           "system_prompt": SYSTEM, **generation}
    return parse_spec(micro_spec_dict(tmp_path, model, data_root, generation=gen, tracking={"wandb": "disabled"}))


def test_a_chat_prompt_is_the_seed_list_and_the_templates_request(tmp_path, tiny_chat_model, data_root):
    chat = build_prompts(_spec(tmp_path, tiny_chat_model, data_root))
    plain = build_prompts(_spec(tmp_path, tiny_chat_model, data_root, chat=False, system_prompt=None))
    instruction = load_template()["chat"]["instruction"]
    for c, p, group in zip(chat["prompt"], plain["prompt"], chat["group"]):
        assert p.endswith("\n-")  # plain: an open list line to continue
        assert c.endswith("\n\n" + instruction.format(group=group.replace("_", " ")))
        head, *seeds = c.split("\n\n")[0].split("\n")
        assert head == p.split("\n")[0] and len(seeds) == 3 and all(x.startswith("- ") for x in seeds)
    assert set(chat["sample_id"]).isdisjoint(plain["sample_id"])  # a chat job is another job


def test_chat_settings_are_validated(tmp_path, tiny_chat_model, data_root):
    with pytest.raises(SpecError, match="system_prompt is set but generation.chat is off"):
        _spec(tmp_path, tiny_chat_model, data_root, chat=False)
    template = tmp_path / "no_chat.yaml"
    template.write_text(json.dumps({k: v for k, v in load_template().items() if k != "chat"}))
    with pytest.raises(ValueError, match="has no chat entry"):
        build_prompts(_spec(tmp_path, tiny_chat_model, data_root, template=str(template)))


def test_transformers_engine_renders_the_chat_template(tiny_chat_model, tiny_model):
    from bias_ray.generate.engines.transformers_engine import TransformersGenerator

    sampling = {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": 5, "max_prompt_tokens": 192}
    gen = TransformersGenerator(str(tiny_chat_model), sampling, "cpu", dtype="bfloat16", chat=True,
                                system_prompt=SYSTEM)
    assert gen.model.dtype == torch.bfloat16  # models.dtype reaches the engine
    enc = gen.encode(["- one\n- two\n\nWrite one more."])
    text = gen.tokenizer.decode(enc["input_ids"][0], skip_special_tokens=False)
    assert text.startswith(f"<|system|>\n{SYSTEM}</s>\n<|user|>\n- one\n- two\n\nWrite one more.</s>\n")
    assert text.endswith("<|assistant|>\n")  # the generation prompt: the reply starts here
    texts, counts = gen.generate(["- one\n- two\n\nWrite one more.", "- three\n\nWrite one more."], seed=1)
    assert len(texts) == 2 and counts.min() > 0
    with pytest.raises(ValueError, match="over generation.max_prompt_tokens"):
        TransformersGenerator(str(tiny_chat_model), {**sampling, "max_prompt_tokens": 8}, "cpu",
                              chat=True).encode(["a long prompt " * 10])
    with pytest.raises(ChatTemplateMissing, match="has no chat template.*generation.chat: false"):
        TransformersGenerator(str(tiny_model), sampling, "cpu", chat=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_chat_generation_job_runs_on_the_transformers_engine(tmp_path, tiny_chat_model, data_root, ray_session):
    from bias_ray.generate.pipeline import generate

    spec = _spec(tmp_path, tiny_chat_model, data_root)
    out = generate(spec, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["generated"] + manifest["quarantined"] == 8
    assert manifest["quarantined"] == 0 and manifest["generated_tokens"] > 0


@pytest.mark.timeout(120)
def test_chat_on_without_a_chat_template_fails_before_any_work(tmp_path, tiny_model, data_root, ray_session):
    from bias_ray.generate.pipeline import generate

    spec = _spec(tmp_path, tiny_model, data_root)
    with pytest.raises(ChatTemplateMissing, match=f"tokenizer of {tiny_model} has no chat template"):
        generate(spec, progress=False)
    assert not list(spec.augmented_dir.glob("shards/part-*"))


def test_vllm_chat_uses_the_chat_template_stage_and_messages(tmp_path, tiny_chat_model, data_root):
    pytest.importorskip("ray.data.llm")
    from bias_ray.generate.engines.vllm_engine import _Preprocess, vllm_config, vllm_sampling

    spec = _spec(tmp_path, tiny_chat_model, data_root, engine="vllm")
    spec.models.dtype = "bfloat16"
    config = vllm_config(spec)
    assert config.engine_kwargs["dtype"] == "bfloat16"
    stage = config.chat_template_stage
    assert (stage if isinstance(stage, bool) else stage.enabled) is True
    row = _Preprocess(vllm_sampling(spec), True, SYSTEM)({"prompt": "- a\n\nWrite one more.", "sample_id": "00ff" * 4})
    assert "prompt" not in row and row["messages"] == chat_messages("- a\n\nWrite one more.", SYSTEM)
    assert row["messages"][-1]["role"] == "user"  # Ray's stage then adds the generation prompt
    plain = vllm_config(_spec(tmp_path, tiny_chat_model, data_root, engine="vllm", chat=False, system_prompt=None))
    stage = plain.chat_template_stage
    assert (stage if isinstance(stage, bool) else stage.enabled) is False


def test_http_chat_requests_and_replies(tmp_path, tiny_chat_model, data_root):
    spec = _spec(tmp_path, tiny_chat_model, data_root, engine="http", endpoint="http://127.0.0.1:9/v1")
    assert completions_url(spec.generation.settings.endpoint, chat=True) == "http://127.0.0.1:9/v1/chat/completions"
    body = make_payload("p", "00000010abcd", payload_settings(spec), chat=True, system_prompt=SYSTEM)
    assert body["messages"] == chat_messages("p", SYSTEM) and "prompt" not in body and body["seed"] == 16
    reply = {"choices": [{"message": {"role": "assistant", "content": " hi"}}], "usage": {"completion_tokens": 2}}
    assert parse_completion(reply) == (" hi", 2, "")
    text, tokens, error = parse_completion({"choices": [{"message": {"role": "assistant"}}]})
    assert (text, tokens) == ("", 0) and error.startswith("malformed response")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_http_engine_sends_chats_to_the_chat_route(tmp_path, tiny_chat_model, data_root, ray_session):
    from bias_ray.generate.pipeline import generate
    from tests.openai_server import serve

    with serve(tiny_chat_model) as (url, app):
        spec = _spec(tmp_path, tiny_chat_model, data_root, engine="http", endpoint=url, http_client="httpx")
        out = generate(spec, progress=False)
        assert getattr(app.state, "chat_requests", 0) == 8 and app.state.requests == 8
        assert app.state.last_chat_prompt.startswith(f"<|system|>\n{SYSTEM}")
        assert app.state.last_chat_prompt.endswith("<|assistant|>\n")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generated"] == 8 and manifest["quarantined"] == 0


def test_an_over_long_chat_prompt_is_quarantined_alone_and_its_batch_still_generates(tiny_chat_model, monkeypatch):
    """One prompt over max_prompt_tokens must not send its whole batch to the row-by-row retry (batch-size x slower)."""
    import numpy as np

    from bias_ray.generate.engines.transformers_engine import TransformersGenerator

    sampling = {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": 4, "max_prompt_tokens": 40}
    gen = TransformersGenerator(str(tiny_chat_model), sampling, "cpu", chat=True)
    calls: list[int] = []
    real = gen.generate
    monkeypatch.setattr(gen, "generate", lambda prompts, seed: (calls.append(len(prompts)), real(prompts, seed))[1])
    batch = {"prompt": np.array(["- one\n\nWrite one more.", "a long prompt " * 30, "- two\n\nWrite one more."],
                                dtype=object), "sample_id": np.array(["a", "b", "c"], dtype=object)}
    out = gen(batch)
    assert calls == [2]  # one batched call for the two that fit
    assert "over generation.max_prompt_tokens 40" in out["engine_error"][1]
    assert out["engine_error"][0] == out["engine_error"][2] == "" and out["generated_tokens"][[0, 2]].min() > 0
