"""Mask-based mitigation: bias-bearing tokens of augmented samples are kept out of the training loss.

Rule. A token at position ``j`` of row ``i`` is *masked* iff row ``i`` is augmented (or
``apply_to: all``) and the token's character span overlaps a lexicon match in the row's text.
Matches are the bias type's group identity terms and/or stereotype attributes (``kinds``) from a
per-bias-type lexicon file, matched case-insensitively on word boundaries (``(?<!\\w)term(?!\\w)``),
so "muslims" matches and "muslimsx" does not; every sub-word token of a matched word is masked.
Real rows are never masked. Padding is never masked.

What "out of the loss" means depends on what the loss reads (train/student.py):

- the masked tokens are LM targets (causal LM student with ``training.lm_loss: full``):
  ``labels[i, j] = -100`` (the ignore index), so the LM loss skips them:
  ``loss = Σ_{(i,j) unmasked} CE(f(x)_{i,j-1}, x_{i,j}) / #unmasked``.
- otherwise (sequence classifier: one label per row; causal LM with ``lm_loss: answer``: only the
  label word is a target) there is no per-token label to ignore, so the masked tokens are removed
  from what the loss can depend on. ``input_rule: attention`` (default) sets
  ``attention_mask[i, j] = 0``, so no other token attends to them; ``replace`` swaps their ids
  for the tokenizer's unknown token. ``loss = CE(f(x ⊙ (1-M)), y)``. If every token of a row
  would be masked, its last token is kept so the row still has an input.

Stats: ``masked_tokens`` and ``masked_rows`` (cumulative), ``masked_share`` (masked / non-pad tokens
of the rows it applies to).

``style: replace`` (the paper's mask-based mitigation) works on the text, before tokenization: in
every augmented row (or every row, ``apply_to: all``) each lexicon match ``w`` (default ``kinds:
[groups]``: identity words, pronouns and first names) becomes ``r(w)``, the input the model sees::

    x' = x with every match w -> r(w),   r(w) = "[MASK]" (replacement: mask, the text of mask_text)
                                          r(w) = neutral(w) or fallback (replacement: neutral)

``neutral`` is the lexicon's map of terms to neutral words ("she" -> "they", "Arab" -> "local");
terms without one (names) take ``fallback``. A word that starts a sentence is capitalised. The loss is
the task's, ``CE(f(x'), y)``; the same parameters as ``none`` are trained. Evaluation texts are not
changed. Stats: ``replaced_terms``, ``replaced_rows``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import pandas as pd
from pydantic import Field, model_validator

from bias_ray.lexicons import LexiconSource, find_spans, load_lexicon, term_pattern
from bias_ray.registry import MITIGATIONS
from bias_ray.train.mitigations.base import Mitigation, NoParams, TrialContext
from bias_ray.train.student import IGNORE_INDEX

STYLE_KINDS = {"loss": ["groups", "attributes"], "replace": ["groups"]}  # default `kinds` of each style


class MaskParams(NoParams):
    style: Literal["loss", "replace"] = Field(
        default="loss", description="loss: matched tokens leave the loss; replace: matched words replaced in the text")
    lexicon: LexiconSource = None
    kinds: list[Literal["groups", "attributes"]] | None = Field(
        default=None, min_length=1, description="which lexicon entries to mask (default: groups and attributes "
        "for style loss, groups for style replace)"
    )
    replacement: Literal["mask", "neutral"] = Field(default="mask", description="style replace: [MASK] or a "
                                                    "neutral word from the lexicon")
    mask_text: str = Field(default="[MASK]", description="style replace: the text of a masked word")
    fallback: str = Field(default="someone", description="style replace, neutral: the word for a term the lexicon "
                          "gives no neutral word (first names)")
    apply_to: Literal["augmented", "all"] = Field(default="augmented", description="rows whose tokens are masked")
    input_rule: Literal["attention", "replace"] = Field(
        default="attention", description="style loss: how masked tokens leave the input when they are not LM targets"
    )

    @model_validator(mode="after")
    def _style_fields(self) -> MaskParams:
        other = {"loss": ("replacement", "mask_text", "fallback"), "replace": ("input_rule",)}[self.style]
        if stray := [f for f in other if f in self.model_fields_set]:
            raise ValueError(f"{', '.join(stray)} do not apply to style {self.style}")
        return self


@MITIGATIONS.register("mask")
class MaskMitigation(Mitigation):
    name = "mask"
    Params = MaskParams
    params: MaskParams

    @classmethod
    def same_as_none_without_augmented_rows(cls, params: MaskParams) -> bool:
        return params.apply_to == "augmented"  # nothing to mask, nothing added to the model

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.params.kinds or STYLE_KINDS[self.params.style])

    def setup(self, ctx: TrialContext) -> None:
        super().setup(ctx)
        self.lexicon = load_lexicon(ctx.lexicon_key, self.params.lexicon)
        terms = self.lexicon.terms(self.kinds)
        self.pattern = term_pattern(terms)
        if self.params.style == "replace":
            self._stats.update(replaced_terms=0.0, replaced_rows=0.0, lexicon_terms=float(len(terms)))
            return
        self._stats.update(masked_tokens=0.0, masked_rows=0.0, masked_share=0.0, lexicon_terms=float(len(terms)))
        self._seen_tokens = 0.0

    def replaced(self, text: str) -> tuple[str, int]:
        """``text`` with every lexicon match replaced (style replace), and how many were."""
        p = self.params

        def repl(m: re.Match[str]) -> str:
            if p.replacement == "mask":
                return p.mask_text
            word = self.lexicon.neutral.get(m.group(0).lower(), p.fallback)
            before = text[: m.start()].rstrip()
            starts = not before or before[-1] in ".!?"
            return word[:1].upper() + word[1:] if starts else word

        return self.pattern.subn(repl, text)

    def transform_train(self, rows: pd.DataFrame) -> pd.DataFrame:
        if self.params.style != "replace":
            return rows
        on = rows["is_augmented"].astype(bool) if self.params.apply_to == "augmented" else pd.Series(True, rows.index)
        rows = rows.copy()
        done = [self.replaced(t) for t in rows.loc[on, "text"].astype(str)]
        rows.loc[on, "text"] = [t for t, _ in done]
        self._add("replaced_terms", sum(n for _, n in done))
        self._add("replaced_rows", sum(1 for _, n in done if n))
        return rows

    def prepare_model(self, student: Any, model: Any) -> None:
        super().prepare_model(student, model)
        if self.params.style == "replace":
            return
        if not student.tokenizer.is_fast:
            raise ValueError(
                "mitigation 'mask' matches lexicon words through token character offsets, which only fast "
                "(Rust) tokenizers give; save the student with a tokenizer.json or use another mitigation"
            )

    summed_stats = ("masked_tokens", "masked_rows", "seen_tokens")

    def counters(self) -> dict[str, float]:
        return {**self._stats, "seen_tokens": getattr(self, "_seen_tokens", 0.0)}

    def finish_merged(self, merged: dict[str, float], per_rank: list[dict[str, float]]) -> dict[str, float]:
        seen = merged.pop("seen_tokens", 0.0)
        if "masked_share" in merged:
            merged["masked_share"] = merged["masked_tokens"] / seen if seen else 0.0
        return merged

    def mask_positions(self, batch: dict[str, Any], rows: pd.DataFrame) -> Any:
        """``(mask, applies)``: boolean ``[B, T]``, True where a token is masked (rule in the module
        docstring), and boolean ``[B]``, True for the rows the rule applies to."""
        import torch

        texts = rows["text"].astype(str).tolist()
        applies = (
            rows["is_augmented"].astype(bool).tolist() if self.params.apply_to == "augmented" else [True] * len(rows)
        )
        offsets = batch["offset_mapping"]  # [B, T, 2] character spans of the tokens
        real = (offsets[..., 1] > offsets[..., 0]) & batch["attention_mask"].bool()
        mask = torch.zeros_like(real)
        for i, (text, on) in enumerate(zip(texts, applies)):
            spans = find_spans(text, self.pattern) if on else []
            if spans:  # a token is masked when its characters overlap any lexicon match (one tensor op a row)
                s = torch.tensor(spans, device=offsets.device)  # [S, 2]
                a, b = offsets[i, :, :1], offsets[i, :, 1:]  # [T, 1]
                mask[i] = real[i] & ((a < s[:, 1]) & (b > s[:, 0])).any(-1)
        return mask, torch.tensor(list(applies), dtype=torch.bool, device=mask.device)

    def transform_batch(self, batch: dict[str, Any], rows: pd.DataFrame) -> dict[str, Any]:
        import torch

        if self.params.style == "replace":  # the text was changed in transform_train
            return batch
        mask, applies = self.mask_positions(batch, rows)
        attention = batch["attention_mask"].bool()
        # keep one token per row: a row with no input left would have nothing to classify
        empty = (attention & ~mask).sum(-1) == 0
        for i in torch.nonzero(empty).flatten().tolist():
            last = torch.nonzero(attention[i]).flatten()[-1]
            mask[i, last] = False
        labels = batch.get("labels")
        if labels is not None and labels.dim() == 2 and bool((labels[mask] != IGNORE_INDEX).all()):
            batch["labels"] = labels.masked_fill(mask, IGNORE_INDEX)  # they were LM targets: ignore them
        elif self.params.input_rule == "attention":
            batch["attention_mask"] = batch["attention_mask"].masked_fill(mask, 0)
        else:
            unk = self.student.tokenizer.unk_token_id
            if unk is None:
                raise ValueError("mask: input_rule 'replace' needs a tokenizer with an unk token; use 'attention'")
            batch["input_ids"] = batch["input_ids"].masked_fill(mask, unk)
        self._add("masked_tokens", mask.sum())
        self._add("masked_rows", mask.any(-1).sum())
        self._seen_tokens += float(attention[applies].sum())
        self._stats["masked_share"] = self._stats["masked_tokens"] / self._seen_tokens if self._seen_tokens else 0.0
        return batch
