"""The transformers engine: a Ray Data actor pool running batched ``generate`` (CPU or GPU).

Weights load in ``models.dtype``; with ``generation.chat`` each prompt goes through the
tokenizer's chat template (generate/chat.py).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

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

    def prompt_errors(self, prompts: list[str]) -> list[str]:
        """Per prompt, why it cannot be generated ("" when it can): a chat prompt over max_prompt_tokens.

        Checked before the batch runs, so one over-long prompt is quarantined alone and its neighbours
        still generate as one batch (a raising batch is retried row by row, ~batch-size times slower).
        """
        if not self.chat:
            return [""] * len(prompts)
        from bias_ray.generate.chat import chat_messages, render_chat

        limit = self.sampling.get("max_prompt_tokens", 192)
        texts = [render_chat(self.tokenizer, chat_messages(p, self.system_prompt)) for p in prompts]
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        return [f"engine error: ValueError: chat prompt of {n} tokens is over generation.max_prompt_tokens {limit}; "
                "raise it or lower generation.few_shot" if n > limit else "" for n in lengths]

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
        errors = self.prompt_errors(prompts)
        texts, counts = [""] * len(prompts), np.zeros(len(prompts), dtype=np.int64)
        rows = [i for i, e in enumerate(errors) if not e]
        try:
            if rows:
                got, got_counts = self.generate([prompts[i] for i in rows], seed)
                for k, i in enumerate(rows):
                    texts[i], counts[i] = got[k], got_counts[k]
        except Exception:  # noqa: BLE001  (isolate the failing rows, keep the job going)
            for i in rows:
                try:
                    t, c = self.generate([prompts[i]], seed + i)
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


class TransformersParams(BaseModel):
    """The transformers engine's settings (``generation.options``)."""

    model_config = ConfigDict(extra="forbid")
    device: Literal["auto", "cpu"] = Field(default="auto", description="cpu: never a GPU, even where there is one.")
    cpu_threads: int | None = Field(default=None, gt=0, description="torch threads per CPU actor; default: its "
                                    "share of the machine's CPUs.")


def engine_settings(spec) -> tuple[dict[str, Any], str, int]:
    """Sampling settings, device and pool size for a spec (shared by the pipeline and the bench).

    On GPUs one replica per GPU unless ``generation.concurrency`` says otherwise; on CPUs a pool
    sized to the free CPUs (one left for Ray Data's tasks).
    """
    from bias_ray.runtime import cpu_budget

    gen, own = spec.generation, spec.generation.settings
    gpus = cluster_gpus() if own.device != "cpu" else 0.0
    use_gpu = gpus >= 1
    concurrency = gen.concurrency or (int(gpus) if use_gpu else int(cpu_budget()))
    # each CPU actor reserves one CPU (the rest stay free for Ray Data's tasks) but may compute on its share of
    # the machine: on 2 cores, 1 actor with 2 threads (about 1.8x the tokens/s of 1 thread)
    import ray

    total = ray.cluster_resources().get("CPU", 1.0) if ray.is_initialized() else 1.0
    threads = own.cpu_threads or max(1, int(total // max(1, concurrency)))
    sampling = {**sampling_params(spec), "cpu_threads": int(threads)}
    return sampling, "cuda" if use_gpu else "cpu", concurrency


@ENGINES.register("transformers")
class TransformersEngine:
    """Batched HF ``generate`` in a pool of actors sized to the free CPUs (or one per GPU)."""

    Params = TransformersParams

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
