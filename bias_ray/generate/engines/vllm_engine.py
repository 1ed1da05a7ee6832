"""The vllm engine: Ray Data LLM's ``vLLMEngineProcessorConfig`` + ``build_processor`` (GPU nodes).

vLLM is imported by Ray only when the processor runs (the ``gpu`` extra installs it). Plain
prompts are continuations: the chat-template stage is off and Ray tokenizes ``prompt`` directly.
With ``generation.chat`` each row becomes ``messages`` (generate/chat.py) and Ray's chat-template
stage renders them with the model's template (a generation prompt after the user turn).
``models.dtype`` is vLLM's ``dtype`` engine argument.
Rows vLLM fails on come back with ``__inference_error__`` (``should_continue_on_error``) and
go to quarantine.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bias_ray.generate.chat import chat_messages, check_generator_chat_template
from bias_ray.generate.engines.base import cluster_gpus, sample_seed
from bias_ray.registry import ENGINES


class VllmParams(BaseModel):
    """The vllm engine's settings (``generation.options``, or the top of ``generation`` as before)."""

    model_config = ConfigDict(extra="forbid")
    tensor_parallel_size: int = Field(default=1, gt=0, description="GPUs per replica.")
    max_model_len: int | None = Field(default=None, gt=0)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="More of vLLM's engine arguments.")
    accelerator_type: str | None = Field(default=None, description="Ray's accelerator type for the replicas.")


def vllm_config(spec):
    """The processor config for a spec: model, tensor parallelism, replicas (default: the GPUs hold), batch
    size, max model len."""
    from ray.data.llm import vLLMEngineProcessorConfig

    g, own = spec.generation, spec.generation.settings
    engine_kwargs: dict[str, Any] = {"tensor_parallel_size": own.tensor_parallel_size, "dtype": spec.models.dtype}
    if own.max_model_len:
        engine_kwargs["max_model_len"] = own.max_model_len
    engine_kwargs.update(own.engine_kwargs)
    return vLLMEngineProcessorConfig(
        model_source=str(spec.models.generator),
        engine_kwargs=engine_kwargs,
        # default: as many replicas as the cluster's GPUs hold (tensor_parallel_size GPUs each)
        concurrency=g.concurrency or max(1, int(cluster_gpus() // own.tensor_parallel_size)),
        batch_size=g.batch_size,
        chat_template_stage=g.chat,
        tokenize_stage=True,
        detokenize_stage=True,
        should_continue_on_error=True,
        accelerator_type=own.accelerator_type,
    )


class _Preprocess:
    """A row's engine input: its prompt, or with chat its messages, and its seeded sampling params."""

    def __init__(self, sampling: dict[str, Any], chat: bool = False, system_prompt: str | None = None) -> None:
        self.sampling, self.chat, self.system_prompt = sampling, chat, system_prompt

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        params = {**self.sampling, "seed": sample_seed(row["sample_id"])}
        if self.chat:
            return {"messages": chat_messages(row["prompt"], self.system_prompt), "sampling_params": params}
        return {"prompt": row["prompt"], "sampling_params": params}


def _postprocess(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("sampling_params", "num_generated_tokens", "generated_tokens",
                                                      "prompt_token_ids", "embeddings", "messages")}
    out.update(generated_text=row.get("generated_text", ""), generated_tokens=int(row.get("num_generated_tokens", 0)),
               engine_error="", engine_s=0.0, device="cuda")
    return out


def vllm_sampling(spec) -> dict[str, Any]:
    g = spec.generation
    return {"temperature": g.temperature, "top_p": g.top_p, "max_tokens": g.max_new_tokens}


@ENGINES.register("vllm")
class VLLMEngine:
    Params = VllmParams

    def apply(self, ds, spec):
        from ray.data.llm import build_processor

        g = spec.generation
        if g.chat:  # when the tokenizer is on this machine; else Ray's chat-template stage fails on the nodes
            check_generator_chat_template(str(spec.models.generator))
        processor = build_processor(vllm_config(spec), preprocess=_Preprocess(vllm_sampling(spec), g.chat,
                                                                              g.system_prompt),
                                    postprocess=_postprocess)
        return processor(ds)
