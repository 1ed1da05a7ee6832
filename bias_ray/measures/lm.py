"""Causal-LM scoring shared by the tasks: log-likelihood of continuations, and sampled generation.

Every task talks to the model through :class:`LMScorer`, so a task never handles padding,
devices or RNG state itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class LMScorer:
    """A causal LM and its tokenizer, with batched log-likelihood and generation."""

    model: Any
    tokenizer: Any
    batch_size: int = 16
    prompt_prefix: str = ""  # e.g. the token mitigation's "<real> " tag, so tasks see what evaluation sees

    def __post_init__(self) -> None:
        cfg = getattr(self.model, "config", None)
        limits = [getattr(cfg, "max_position_embeddings", None), getattr(self.tokenizer, "model_max_length", None)]
        self.max_length = int(min([v for v in limits if isinstance(v, int) and v > 0] + [1024]))
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        self.start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _ids(self, prompt: str, continuation: str) -> tuple[list[int], int]:
        tok = self.tokenizer
        prompt = self.prompt_prefix + prompt
        p = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        c = tok(continuation, add_special_tokens=False)["input_ids"]
        if not c:
            raise ValueError(f"continuation {continuation!r} encodes to no token")
        ids = ([self.start_id] if self.start_id is not None else []) + p + c
        if len(ids) < 2:
            raise ValueError("the tokenizer has no bos/eos token to condition a one-token text on; set one")
        ids = ids[-self.max_length :]  # keep the continuation, drop the oldest context
        return ids, min(len(c), len(ids) - 1)

    def loglik(self, prompts: list[str], continuations: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Sum of log p(continuation tokens | prompt) and the number of continuation tokens, per pair."""
        import torch

        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        encoded = [self._ids(p, c) for p, c in zip(prompts, continuations)]
        sums = np.zeros(len(encoded))
        counts = np.array([n for _, n in encoded], dtype=int)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():  # not inference_mode: a sharded (FSDP2) student could not train on afterwards
            for start in range(0, len(encoded), self.batch_size):
                chunk = encoded[start : start + self.batch_size]
                width = max(len(ids) for ids, _ in chunk)
                input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for i, (ids, _) in enumerate(chunk):
                    input_ids[i, : len(ids)] = torch.tensor(ids)
                    mask[i, : len(ids)] = 1
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
                for i, (ids, n) in enumerate(chunk):  # only the continuation's positions, on the device
                    rows = torch.log_softmax(logits[i, len(ids) - n - 1 : len(ids) - 1].float(), dim=-1)
                    targets = torch.tensor(ids[len(ids) - n :], device=rows.device)
                    sums[start + i] = float(rows.gather(1, targets[:, None]).sum())
        if was_training:
            self.model.train()
        return sums, counts

    def generate(self, prompts: list[str], max_new_tokens: int, seed: int = 0) -> list[str]:
        """Sampled continuations (temperature 1, top-p 0.95), without touching the caller's RNG state."""
        import torch

        tok = self.tokenizer
        old_side = getattr(tok, "padding_side", "right")
        old_trunc = getattr(tok, "truncation_side", "right")
        tok.padding_side = "left"
        tok.truncation_side = "left"  # an over-long prompt keeps its end, the text the model continues
        was_training = self.model.training
        self.model.eval()
        out: list[str] = []
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():  # no_grad: see log_likelihoods
                torch.manual_seed(seed)
                for start in range(0, len(prompts), self.batch_size):
                    batch = [self.prompt_prefix + p for p in prompts[start : start + self.batch_size]]
                    enc = tok(batch, return_tensors="pt", padding=True, truncation=True,
                              max_length=max(8, self.max_length - max_new_tokens))
                    enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                    gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, top_p=0.95,
                                              temperature=1.0, pad_token_id=self.pad_id)
                    new = gen[:, enc["input_ids"].shape[1] :]
                    out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
        finally:
            tok.padding_side, tok.truncation_side = old_side, old_trunc
            if was_training:
                self.model.train()
        return out


def causal_lm_from_classifier(classifier, student_path: str, dtype=None):
    """A causal LM whose transformer body carries the (LoRA-merged) weights of a fine-tuned classifier.

    The sweep fine-tunes ``AutoModelForSequenceClassification``; the likelihood and generation
    tasks need the language-model head, so this loads the student's causal LM and copies the
    trained body into it (in ``dtype``, the student's base precision). The classifier passed in is
    left unchanged.
    """
    import copy

    from transformers import AutoModelForCausalLM

    model = copy.deepcopy(classifier)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    lm = AutoModelForCausalLM.from_pretrained(student_path, dtype=dtype)  # None: the checkpoint's own
    prefix = lm.base_model_prefix
    body = getattr(model, prefix, None)
    if body is None:
        raise ValueError(f"{type(model).__name__} has no `{prefix}` body to copy into {type(lm).__name__}")
    # the token mitigation grows the classifier's vocabulary; grow the LM's to match first
    n_vocab = body.get_input_embeddings().weight.shape[0]
    if lm.get_input_embeddings().weight.shape[0] != n_vocab:
        lm.resize_token_embeddings(n_vocab)
    _, unexpected = getattr(lm, prefix).load_state_dict(body.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"the classifier body does not match the student at {student_path}: {unexpected[:3]}")
    if getattr(lm.config, "tie_word_embeddings", False):
        lm.tie_weights()
    return lm.to(next(classifier.parameters()).device)
