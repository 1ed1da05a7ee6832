"""How a student reads a row and answers: a sequence classifier, or a causal LM that writes the label.

``seq_cls``: the text is the input, a classification head gives ``[B, C]`` logits, the loss is
CE over the C labels. ``causal_lm`` (classification-as-generation): the input is
``text + prompt_suffix + " " + label_words[y]``; the loss is the LM loss on the answer token only
(``lm_loss: answer``) or on the text and the answer (``lm_loss: full``); the class logits are the
next-token logits of the first token of each label word after the prompt.

Every batch holds the model inputs plus ``offset_mapping`` (character spans of each token in the
row's *text*, ``(0, 0)`` for padding and prompt/answer tokens, all ``(0, 0)`` with a slow
tokenizer) and ``answer_pos``; pass
:func:`model_inputs` of it to the model.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

IGNORE_INDEX = -100
MODEL_KEYS = ("input_ids", "attention_mask", "labels")


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k in MODEL_KEYS}


class StudentIO:
    """Tokenization and class logits for one student kind (see the module docstring)."""

    def __init__(self, kind: str, tokenizer: Any, max_length: int, label_words: list[str] | None = None,
                 prompt_suffix: str = "\nAnswer:", lm_loss: str = "answer") -> None:
        if kind not in ("seq_cls", "causal_lm"):
            raise ValueError(f"unknown student kind {kind!r}; allowed: seq_cls, causal_lm")
        self.kind, self.tokenizer, self.max_length = kind, tokenizer, max_length
        self.device = "cpu"  # where encode() puts its tensors: the trial sets it to the model's device
        self.dtype: Any = None  # the model's compute dtype (its base weights'); half: autocast (models/precision.py)
        self.label_words = list(label_words or ["neutral", "hate"])
        self.prompt_suffix, self.lm_loss = prompt_suffix, lm_loss

    @cached_property
    def suffix_ids(self) -> list[int]:
        """The prompt suffix's tokens (fixed for the trial: tokenized once, not every step)."""
        return self.tokenizer(self.prompt_suffix, add_special_tokens=False)["input_ids"]

    @cached_property
    def answer_ids(self) -> list[int]:
        """First token of each label word, as the model would write it after the prompt."""
        ids = [self.tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in self.label_words]
        if len(set(ids)) != len(ids):
            raise ValueError(
                f"label words {self.label_words} start with the same token; pick words that differ in their first token"
            )
        return ids

    def encode(self, texts: list[str], labels: Any | None = None) -> dict[str, Any]:
        """A batch for ``texts`` on ``self.device``; with ``labels`` (ints), a training batch with the loss labels."""
        batch = self._encode(texts, labels)
        if self.device == "cpu":
            return batch
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()}

    def _encode(self, texts: list[str], labels: Any | None = None) -> dict[str, Any]:
        import torch

        if self.kind == "seq_cls":
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt", return_offsets_mapping=self.tokenizer.is_fast)
            batch = dict(enc)
            batch.setdefault("offset_mapping", torch.zeros((*enc["input_ids"].shape, 2), dtype=torch.long))
            batch["answer_pos"] = torch.zeros(len(texts), dtype=torch.long)
            if labels is not None:
                batch["labels"] = torch.tensor(list(labels), dtype=torch.long)
            return batch
        suffix = self.suffix_ids
        answers = self.answer_ids
        budget = self.max_length - len(suffix) - 1
        if budget < 1:
            raise ValueError(f"training.max_length {self.max_length} leaves no room for the text after the prompt")
        enc = self.tokenizer(texts, truncation=True, max_length=budget, add_special_tokens=False,
                             return_offsets_mapping=self.tokenizer.is_fast)
        rows, offsets, pos, targets = [], [], [], []
        spans = enc.get("offset_mapping") or [[(0, 0)] * len(ids) for ids in enc["input_ids"]]
        for i, (ids, offs) in enumerate(zip(enc["input_ids"], spans)):
            prompt = list(ids) + suffix
            answer = [answers[int(labels[i])]] if labels is not None else []
            rows.append(prompt + answer)
            offsets.append(list(offs) + [(0, 0)] * (len(suffix) + len(answer)))
            pos.append(len(prompt) - 1)
            if labels is not None:
                target = (list(ids) + suffix if self.lm_loss == "full" else [IGNORE_INDEX] * len(prompt)) + answer
                targets.append(target)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        batch = {
            "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
            "offset_mapping": torch.tensor([o + [(0, 0)] * (width - len(o)) for o in offsets]),
            "answer_pos": torch.tensor(pos),
        }
        if labels is not None:
            batch["labels"] = torch.tensor([t + [IGNORE_INDEX] * (width - len(t)) for t in targets])
        return batch

    def class_logits(self, logits: Any, batch: dict[str, Any]) -> Any:
        """``[B, C]`` logits over the labels from the model's output logits."""
        if self.kind == "seq_cls":
            return logits
        rows = logits[range(logits.shape[0]), batch["answer_pos"]]
        return rows[:, self.answer_ids]
