"""The transformers engine: a Ray Data actor pool running batched ``generate`` (CPU or GPU).

Weights load in ``models.dtype``; with ``generation.chat`` each prompt goes through the
tokenizer's chat template (generate/chat.py).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bias_ray.generate.engines.base import cluster_gpus, sample_seed
from bias_ray.generate.prompts import sampling_params
from bias_ray.registry import ENGINES


class TransformersGenerator:
    """Callable class for ``map_batches``: loads the model once per actor, generates per batch.

    A batch that raises is retried row by row, so one bad prompt is quarantined with its error
    instead of failing the job or its neighbours.
    """

    def __init__(self, model_path: str, sampling: dict[str, Any], device: str = "auto", dtype: str = "auto",
                 chat: bool = False, system_prompt: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from bias_ray.generate.chat import require_chat_template
        from bias_ray.models.precision import load_dtype
        from bias_ray.runtime import quiet_libraries

        quiet_libraries()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_num_threads(int(sampling.get("cpu_threads", 1)))
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"  # an over-long prompt keeps its end: the open line to continue
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat, self.system_prompt = chat, system_prompt
        if chat:
            require_chat_template(self.tokenizer, model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=load_dtype(dtype)).to(device).eval()
        self.sampling = sampling
        self.torch = torch

    def encode(self, prompts: list[str]):
        """Token ids of a batch of prompts. Plain: an over-long prompt loses its start (its end is the open line).
        Chat: each prompt is rendered as a chat (the template's own special tokens included); an over-long
        one is an error, since cutting it would cut the chat format."""
        limit = self.sampling.get("max_prompt_tokens", 192)
        if not self.chat:
            return self.tokenizer(prompts, return_tensors="pt", padding=True, truncation=True, max_length=limit)
        from bias_ray.generate.chat import chat_messages, render_chat

        texts = [render_chat(self.tokenizer, chat_messages(p, self.system_prompt)) for p in prompts]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        longest = int(enc["attention_mask"].sum(dim=1).max())
        if longest > limit:
            raise ValueError(f"chat prompt of {longest} tokens is over generation.max_prompt_tokens {limit}; "
                             "raise it or lower generation.few_shot")
        return enc

    def generate(self, prompts: list[str], seed: int) -> tuple[list[str], np.ndarray]:
        """Texts and generated-token counts for ``prompts`` (one padded batch)."""
        enc = self.encode(prompts).to(self.device)
        temperature = self.sampling["temperature"]
        self.torch.manual_seed(seed)
        with self.torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=self.sampling["max_new_tokens"],
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_p=self.sampling["top_p"] if temperature > 0 else None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = out[:, enc["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        counts = (new_tokens != self.tokenizer.pad_token_id).sum(dim=1).cpu().numpy()
        return texts, counts.astype(np.int64)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = [str(p) for p in batch["prompt"]]
        # the batch's first sample id seeds sampling: reproducible for a given batching
        seed = sample_seed(batch["sample_id"][0]) if "sample_id" in batch and len(prompts) else 0
        started = time.perf_counter()
        errors = [""] * len(prompts)
        try:
            texts, counts = self.generate(prompts, seed)
        except Exception:  # noqa: BLE001  (isolate the failing rows, keep the job going)
            texts, counts = [""] * len(prompts), np.zeros(len(prompts), dtype=np.int64)
            for i, p in enumerate(prompts):
                try:
                    t, c = self.generate([p], seed + i)
                    texts[i], counts[i] = t[0], c[0]
                except Exception as err:  # noqa: BLE001
                    errors[i] = f"engine error: {type(err).__name__}: {err}"[:500]
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        batch["generated_text"] = np.array(texts, dtype=object)
        batch["generated_tokens"] = counts
        batch["engine_error"] = np.array(errors, dtype=object)
        batch["engine_s"] = np.full(len(prompts), elapsed / max(1, len(prompts)))
        batch["device"] = np.array([self.device] * len(prompts), dtype=object)
        return batch


def engine_settings(spec) -> tuple[dict[str, Any], str, int]:
    """Sampling settings, device and pool size for a spec (shared by the pipeline and the bench).

    On GPUs one replica per GPU unless ``generation.concurrency`` says otherwise; on CPUs a pool
    sized to the free CPUs (one left for Ray Data's tasks).
    """
    from bias_ray.runtime import cpu_budget

    gen = spec.generation
    gpus = cluster_gpus() if gen.options.get("device", "auto") != "cpu" else 0.0
    use_gpu = gpus >= 1
    concurrency = gen.concurrency or (int(gpus) if use_gpu else int(cpu_budget()))
    sampling = {**sampling_params(spec), "cpu_threads": int(gen.options.get("cpu_threads", 1))}
    return sampling, "cuda" if use_gpu else "cpu", concurrency


@ENGINES.register("transformers")
class TransformersEngine:
    """Batched HF ``generate`` in a pool of actors sized to the free CPUs (or one per GPU)."""

    def apply(self, ds, spec):
        from ray.data import ActorPoolStrategy

        from bias_ray.generate.chat import check_generator_chat_template

        sampling, device, concurrency = engine_settings(spec)
        g = spec.generation
        if g.chat:  # fail here, in one clear line, rather than in every actor
            check_generator_chat_template(str(spec.models.generator))
        return ds.map_batches(
            TransformersGenerator,
            fn_constructor_kwargs={"model_path": str(spec.models.generator), "sampling": sampling, "device": device,
                                   "dtype": spec.models.dtype, "chat": g.chat, "system_prompt": g.system_prompt},
            batch_size=spec.generation.batch_size,
            compute=ActorPoolStrategy(size=concurrency),
            num_gpus=1 if device == "cuda" else 0,
            num_cpus=1,
        )
