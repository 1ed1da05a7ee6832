"""The vllm engine: Ray Data LLM's ``vLLMEngineProcessorConfig`` + ``build_processor`` (GPU nodes).

vLLM is imported by Ray only when the processor runs (the ``gpu`` extra installs it). Prompts
are continuations, so the chat-template stage is off and Ray tokenizes ``prompt`` directly.
Rows vLLM fails on come back with ``__inference_error__`` (``should_continue_on_error``) and
go to quarantine.
"""

from __future__ import annotations

from typing import Any

from bias_ray.generate.engines.base import sample_seed
from bias_ray.registry import ENGINES


def vllm_config(spec):
    """The processor config for a spec: model, tensor parallelism, replicas, batch size, max model len."""
    from ray.data.llm import vLLMEngineProcessorConfig

    g = spec.generation
    engine_kwargs: dict[str, Any] = {"tensor_parallel_size": g.tensor_parallel_size}
    if g.max_model_len:
        engine_kwargs["max_model_len"] = g.max_model_len
    engine_kwargs.update(g.options.get("engine_kwargs", {}))
    return vLLMEngineProcessorConfig(
        model_source=str(spec.models.generator),
        engine_kwargs=engine_kwargs,
        concurrency=g.concurrency or 1,
        batch_size=g.batch_size,
        chat_template_stage=False,
        tokenize_stage=True,
        detokenize_stage=True,
        should_continue_on_error=True,
        accelerator_type=g.options.get("accelerator_type"),
    )


class _Preprocess:
    def __init__(self, sampling: dict[str, Any]) -> None:
        self.sampling = sampling

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": row["prompt"],
                "sampling_params": {**self.sampling, "seed": sample_seed(row["sample_id"])}}


def _postprocess(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("sampling_params", "num_generated_tokens", "generated_tokens",
                                                      "prompt_token_ids", "embeddings")}
    out.update(generated_text=row.get("generated_text", ""), generated_tokens=int(row.get("num_generated_tokens", 0)),
               engine_error="", engine_s=0.0, device="cuda")
    return out


def vllm_sampling(spec) -> dict[str, Any]:
    g = spec.generation
    return {"temperature": g.temperature, "top_p": g.top_p, "max_tokens": g.max_new_tokens}


@ENGINES.register("vllm")
class VLLMEngine:
    def apply(self, ds, spec):
        from ray.data.llm import build_processor

        processor = build_processor(vllm_config(spec), preprocess=_Preprocess(vllm_sampling(spec)),
                                    postprocess=_postprocess)
        return processor(ds)
