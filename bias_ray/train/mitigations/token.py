"""Token-based mitigation: mark each sample's provenance with a special token.

Rule: a training text t becomes ``tag(source) + " " + t`` with ``tag = augmented_tag`` for
augmented rows and ``real_tag`` for real rows. The tags are added to the tokenizer as special
tokens, the embedding matrix is resized and trained in full. At evaluation every text is
prefixed with ``real_tag``, so the model is conditioned on the distribution of real data.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bias_ray.train.mitigations import MITIGATIONS
from bias_ray.train.mitigations.base import Mitigation


@MITIGATIONS.register("token")
class TokenMitigation(Mitigation):
    name = "token"
    modules_to_save = ["embed_tokens"]

    def __init__(self, real_tag: str = "<real>", augmented_tag: str = "<aug>") -> None:
        super().__init__()
        self.real_tag, self.augmented_tag = real_tag, augmented_tag

    def _tagged(self, rows: pd.DataFrame, tags: pd.Series) -> pd.DataFrame:
        rows = rows.copy()
        rows["text"] = tags + " " + rows["text"].astype(str)
        return rows

    def transform_train(self, rows: pd.DataFrame) -> pd.DataFrame:
        aug = rows["is_augmented"].astype(bool)
        self._stats["tagged_augmented"] = float(aug.sum())
        self._stats["tagged_real"] = float((~aug).sum())
        tags = aug.map({True: self.augmented_tag, False: self.real_tag})
        return self._tagged(rows, tags)

    def transform_eval(self, rows: pd.DataFrame) -> pd.DataFrame:
        return self._tagged(rows, pd.Series(self.real_tag, index=rows.index))

    def prepare_model(self, tokenizer: Any, model: Any) -> None:
        added = tokenizer.add_special_tokens({"additional_special_tokens": [self.real_tag, self.augmented_tag]})
        model.resize_token_embeddings(len(tokenizer))
        self._stats["tokens_added"] = float(added)
