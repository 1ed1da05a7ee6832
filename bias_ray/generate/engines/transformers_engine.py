"""The transformers engine: a Ray Data actor pool running batched ``generate`` (CPU or GPU)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bias_ray.generate.engines import ENGINES


class TransformersGenerator:
    """Callable class for ``map_batches``: loads the model once per actor, generates per batch."""

    def __init__(self, model_path: str, sampling: dict[str, Any], device: str = "auto") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from bias_ray.runtime import quiet_libraries

        quiet_libraries()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_num_threads(1)
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
        self.sampling = sampling
        self.torch = torch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = [str(p) for p in batch["prompt"]]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, truncation=True,
                             max_length=self.sampling.get("max_prompt_tokens", 192)).to(self.device)
        temperature = self.sampling["temperature"]
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
        pad = self.tokenizer.pad_token_id
        counts = (new_tokens != pad).sum(dim=1).cpu().numpy()
        batch["generated_text"] = np.array(texts, dtype=object)
        batch["generated_tokens"] = counts.astype(np.int64)
        return batch


@ENGINES.register("transformers")
class TransformersEngine:
    """Batched HF ``generate`` in a pool of actors sized to the free CPUs (or one per GPU)."""

    def apply(self, ds, spec):
        import torch
        from ray.data import ActorPoolStrategy

        from bias_ray.runtime import cpu_budget

        gen = spec.generation
        use_gpu = torch.cuda.is_available() and gen.options.get("device", "auto") != "cpu"
        concurrency = gen.concurrency or (1 if use_gpu else int(cpu_budget()))
        sampling = {"temperature": gen.temperature, "top_p": gen.top_p, "max_new_tokens": gen.max_new_tokens}
        return ds.map_batches(
            TransformersGenerator,
            fn_constructor_kwargs={"model_path": str(spec.models.generator), "sampling": sampling,
                                   "device": "cuda" if use_gpu else "cpu"},
            batch_size=gen.batch_size,
            compute=ActorPoolStrategy(size=concurrency),
            num_gpus=1 if use_gpu else 0,
            num_cpus=1,
        )
