"""The one interface every mitigation implements; each hook defaults to doing nothing."""

from __future__ import annotations

from typing import Any

import pandas as pd


class Mitigation:
    """A mitigation can change the data, the tokenizer/model, the batch and/or the loss.

    Hooks, in the order a trial calls them:
    ``transform_train`` (rows) -> ``prepare_model`` (tokenizer, model, before LoRA) ->
    ``transform_batch`` (each tokenized batch) -> ``extra_loss`` (each step) and
    ``transform_eval`` (evaluation rows). ``stats`` is logged to Tune and W&B at each report.
    """

    name = "base"
    #: Model modules that must be trained in full beside LoRA (e.g. resized embeddings).
    modules_to_save: list[str] = []

    def __init__(self, **params: Any) -> None:
        if params:
            raise ValueError(f"mitigation {self.name!r} takes no parameters; got {sorted(params)}")
        self._stats: dict[str, float] = {}

    def transform_train(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows

    def transform_eval(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows

    def prepare_model(self, tokenizer: Any, model: Any) -> None:
        return None

    def transform_batch(self, batch: dict[str, Any], rows: pd.DataFrame) -> dict[str, Any]:
        return batch

    def extra_loss(self, model: Any, batch: dict[str, Any], outputs: Any) -> Any | None:
        return None

    def stats(self) -> dict[str, float]:
        return {f"mitigation/{k}": v for k, v in self._stats.items()}
