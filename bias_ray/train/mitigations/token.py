"""Token-based mitigation: mark each sample's provenance with special tokens.

Rule: a training text ``t`` becomes ``tag(row) + " " + t`` where ``tag = augmented_tag`` for
augmented rows and ``real_tag`` for real rows; with ``tag_bias_type`` augmented rows also carry
``<bias:TYPE>`` after the provenance tag. The tags are added to the tokenizer as special tokens
(one id each, never split), the embedding matrix is resized and only the rows of the added
tags are trained beside LoRA (peft's trainable tokens, ``trainable_token_indices``): the rest of
the matrix stays frozen as under ``none``, so at bias ratio 0 the two differ by the tag rows only
(``d`` parameters per tag, d = hidden size). At evaluation every text gets ``eval_tag``'s tag (default the real-data
tag), so the model is conditioned on the distribution of real data. The loss is unchanged:
``loss = CE(f(tag(x) ⊕ x), y)``.

``style: prefix`` (the paper's token-based mitigation): each augmented training text ``t`` becomes
``text + " " + t`` with a plain-language warning (default "The following text may contain bias:");
real rows and every evaluation text are left as they are. No token is added and no embedding row is
trained, so it trains exactly the parameters of ``none``: ``loss = CE(f(w ⊕ x), y)`` for augmented
``x``, ``CE(f(x), y)`` for real ``x``.
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from bias_ray.registry import MITIGATIONS
from bias_ray.train.mitigations.base import Mitigation, NoParams

TAG_FIELDS = ("real_tag", "augmented_tag", "tag_bias_type", "eval_tag")


class TokenParams(NoParams):
    style: Literal["tags", "prefix"] = Field(
        default="tags", description="tags: provenance tokens on every row; prefix: a warning text on augmented rows")
    text: str = Field(default="The following text may contain bias:", description="style prefix: the warning")
    real_tag: str = Field(default="<real>", description="tag prefixed to real rows")
    augmented_tag: str = Field(default="<aug>", description="tag prefixed to augmented rows")
    tag_bias_type: bool = Field(default=False, description="also prefix augmented rows with <bias:TYPE>")
    eval_tag: Literal["real", "augmented", "none"] = Field(default="real", description="tag used at evaluation")

    @field_validator("real_tag", "augmented_tag")
    @classmethod
    def _one_word(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v):
            raise ValueError(f"a tag must be one non-empty word without spaces, got {v!r}")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> TokenParams:
        if self.style == "prefix" and (stray := [f for f in TAG_FIELDS if f in self.model_fields_set]):
            raise ValueError(f"{', '.join(stray)} belong to style tags; style prefix takes only `text`")
        if self.style == "tags" and "text" in self.model_fields_set:
            raise ValueError("`text` belongs to style prefix; set style: prefix or remove text")
        if self.style == "prefix" and not self.text.strip():
            raise ValueError("style prefix needs a non-empty `text`")
        if self.real_tag == self.augmented_tag:
            raise ValueError(f"real_tag and augmented_tag must differ (both {self.real_tag!r})")
        return self


@MITIGATIONS.register("token")
class TokenMitigation(Mitigation):
    name = "token"
    Params = TokenParams
    params: TokenParams

    @classmethod
    def same_as_none_without_augmented_rows(cls, params: TokenParams) -> bool:
        return params.style == "prefix"  # tags mark real rows too, and add embedding rows to train

    @property
    def bias_tag(self) -> str:
        return f"<bias:{self.ctx.bias_type}>" if self.ctx else "<bias>"

    def new_tokens(self) -> list[str]:
        p = self.params
        return [p.real_tag, p.augmented_tag] + ([self.bias_tag] if p.tag_bias_type else [])

    def _augmented_prefix(self) -> str:
        p = self.params
        return p.augmented_tag + (" " + self.bias_tag if p.tag_bias_type else "")

    def transform_train(self, rows: pd.DataFrame) -> pd.DataFrame:
        aug = rows["is_augmented"].astype(bool)
        if self.params.style == "prefix":
            self._stats["prefixed_augmented"] = float(aug.sum())
            rows = rows.copy()
            rows.loc[aug, "text"] = self.params.text + " " + rows.loc[aug, "text"].astype(str)
            return rows
        self._stats["tagged_augmented"] = float(aug.sum())
        self._stats["tagged_real"] = float((~aug).sum())
        tags = aug.map({True: self._augmented_prefix(), False: self.params.real_tag})
        rows = rows.copy()
        rows["text"] = tags + " " + rows["text"].astype(str)
        return rows

    def eval_prefix(self) -> str:
        which = self.params.eval_tag
        if which == "none" or self.params.style == "prefix":
            return ""
        return (self.params.real_tag if which == "real" else self._augmented_prefix()) + " "

    def transform_eval(self, rows: pd.DataFrame) -> pd.DataFrame:
        prefix = self.eval_prefix()
        if not prefix:
            return rows
        rows = rows.copy()
        rows["text"] = prefix + rows["text"].astype(str)
        return rows

    def prepare_model(self, student: Any, model: Any) -> None:
        super().prepare_model(student, model)
        if self.params.style == "prefix":  # plain words: nothing added, nothing trained beyond `none`
            return
        tokenizer = student.tokenizer
        added = tokenizer.add_special_tokens(
            {"additional_special_tokens": self.new_tokens()}, replace_extra_special_tokens=False
        )
        model.resize_token_embeddings(len(tokenizer))
        self.trainable_token_indices = tokenizer.convert_tokens_to_ids(self.new_tokens())
        self._stats["tokens_added"] = float(added)
        self._stats["vocab_size"] = float(len(tokenizer))
