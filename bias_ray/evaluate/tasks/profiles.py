"""The shared part of the tasks over counterfactual profiles (recruitment, salary).

Both ask about the same profiles with a prompt template: in ``answer_mode: generate`` the
student writes an answer that the task parses; otherwise each task scores its answer options by
log-likelihood, calibrated against the content-free prompt of each occupation (same prompt,
no applicant), which :meth:`ProfileTask.score_options` receives next to the real prompts.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import pandas as pd

from bias_ray.evaluate.counterfactual import answer_mode, format_prompts, profile_rows
from bias_ray.evaluate.tasks import Task, TaskContext


class ProfileTask(Task):
    """Rows are counterfactual profiles; ``predict`` adds ``answer_column`` (generated or scored)."""

    default_prompt: str
    answer_column: str
    parse_answer: Callable[[str], Any]  # a staticmethod: answer text -> the answer column's value
    default_max_new_tokens: int

    def rows(self, ctx: TaskContext) -> pd.DataFrame:
        return profile_rows(ctx, self.options)

    def predict(self, lm, rows: pd.DataFrame, ctx: TaskContext) -> pd.DataFrame:
        template = self.options.get("prompt", self.default_prompt)
        out = rows.copy()
        prompts = format_prompts(rows, template)
        if answer_mode(self.options, self.name) == "generate":
            tokens = int(self.options.get("max_new_tokens", self.default_max_new_tokens))
            out["answer_text"] = lm.generate(prompts, tokens, seed=ctx.seed)
            out[self.answer_column] = out["answer_text"].map(self.parse_answer)
            return out
        free = rows.drop_duplicates("occupation")
        return self.score_options(lm, out, prompts, free, format_prompts(free, template, content_free=True))

    @abstractmethod
    def score_options(self, lm, out: pd.DataFrame, prompts: list[str], free: pd.DataFrame,
                      free_prompts: list[str]) -> pd.DataFrame:
        """``out`` with the answer chosen by log-likelihood; ``free`` holds one row per occupation,
        ``free_prompts`` their content-free prompts."""
