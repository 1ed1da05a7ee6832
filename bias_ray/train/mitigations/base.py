"""The one interface every mitigation implements; each hook defaults to doing nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from bias_ray.train.collective import LOCAL, Collective


class NoParams(BaseModel):
    """Parameters of a mitigation; subclasses list theirs as pydantic fields (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class TrialContext:
    """What a mitigation may need to know about the trial it runs in."""

    bias_type: str
    groups: list[str]
    student_kind: str = "seq_cls"
    lexicon_name: str = ""  # the lexicon file's name: the bias type without its framing (default: bias_type)
    #: the trial's workers (one by default): batch statistics that span the step are summed over them
    collective: Collective = LOCAL

    @property
    def lexicon_key(self) -> str:
        return self.lexicon_name or self.bias_type


def validate_params(cls: type[Mitigation], params: dict[str, Any]) -> BaseModel:
    """Validate ``params`` against ``cls.Params``; a ValueError names each bad key and what is allowed."""
    try:
        return cls.Params.model_validate(params)
    except ValidationError as err:
        allowed = ", ".join(f"{f.alias or k} ({f.description})" for k, f in cls.Params.model_fields.items())
        problems = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "(params)"
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown parameter"
            problems.append(f"{loc}: {msg}")
        raise ValueError(
            f"mitigation {cls.name!r}: bad params: {'; '.join(problems)}. Allowed: {allowed or 'none'}"
        ) from None


class Mitigation:
    """A mitigation can change the data, the tokenizer/model, the batch and/or the loss.

    Hooks, in the order a trial calls them:
    ``setup`` (trial context) -> ``transform_train`` (rows) -> ``prepare_model`` (student IO,
    model, before LoRA) -> per step ``transform_batch`` (encoded batch + its rows), the forward pass
    (with ``forward_kwargs``) and ``extra_loss`` (added to the task loss) -> ``transform_eval`` (evaluation rows).
    ``stats`` is reported to Tune (and so W&B) at each evaluation, under ``mitigation/``.
    """

    name: ClassVar[str] = "base"
    Params: ClassVar[type[BaseModel]] = NoParams
    #: Model modules that must be trained in full beside LoRA. Every one adds its whole weight to the
    #: trainable parameters, which makes a comparison with ``none`` unfair: prefer
    #: ``trainable_token_indices``. The trial logs ``trainable_params`` so the difference is visible.
    modules_to_save: list[str] = []
    #: Rows of the input embedding trained beside LoRA (peft's trainable tokens), set by ``prepare_model``.
    trainable_token_indices: list[int] = []
    #: Counters that each worker of a multi-worker trial keeps for its own rows (summed by :meth:`merged_stats`);
    #: every other statistic is the same on every worker (it comes from the whole mix or a step-wide value).
    summed_stats: tuple[str, ...] = ()

    def __init__(self, **params: Any) -> None:
        self.params = validate_params(type(self), params)
        self._stats: dict[str, float] = {}
        self.ctx: TrialContext | None = None
        self.student: Any = None  # bias_ray.train.student.StudentIO, set by prepare_model

    @classmethod
    def same_as_none_without_augmented_rows(cls, params: BaseModel) -> bool:
        """True when, on a mix with no augmented row (bias ratio 0), a trial with these params trains
        and is scored exactly as ``none``: same rows, tokens, parameters, loss and evaluation. The sweep
        then trains that cell once (see ``bias_ray.train.sweep.same_as``). Default: False (not claimed);
        ``tests/test_same_cells.py`` checks every claim by training both."""
        return False

    @classmethod
    def validated_params(cls, params: dict[str, Any]) -> BaseModel:
        """``params`` checked against :attr:`Params` (the spec calls this through the registry)."""
        return validate_params(cls, params)

    def setup(self, ctx: TrialContext) -> None:
        self.ctx = ctx

    def transform_train(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows

    def transform_eval(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows

    def eval_prefix(self) -> str:
        """Text put before every evaluation prompt (downstream tasks condition on it too)."""
        return ""

    def prepare_model(self, student: Any, model: Any) -> None:
        """``student`` is the trial's StudentIO (tokenizer, encode, class_logits); ``model`` is not yet LoRA-wrapped."""
        self.student = student

    def transform_batch(self, batch: dict[str, Any], rows: pd.DataFrame) -> dict[str, Any]:
        return batch

    def forward_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of the training forward pass (e.g. ``output_hidden_states``)."""
        return {}

    def extra_loss(self, model: Any, batch: dict[str, Any], outputs: Any, rows: pd.DataFrame) -> Any | None:
        return None

    def _add(self, key: str, value: float) -> None:
        self._stats[key] = self._stats.get(key, 0.0) + float(value)

    def stats(self) -> dict[str, float]:
        return {f"mitigation/{k}": v for k, v in self._stats.items()}

    def merged_stats(self) -> dict[str, float]:
        """:meth:`stats` over all the trial's workers: ``summed_stats`` summed, the rest as rank 0 has them.
        Every worker calls it (a collective); one worker returns :meth:`stats` itself."""
        collective = self.ctx.collective if self.ctx else LOCAL
        if collective.is_local:
            return self.stats()
        per_rank = collective.gather(self.counters())
        merged = dict(per_rank[0])
        for key in (k for k in self.summed_stats if k in merged):
            merged[key] = sum(s.get(key, 0.0) for s in per_rank)
        return {f"mitigation/{k}": v for k, v in self.finish_merged(merged, per_rank).items()}

    def counters(self) -> dict[str, float]:
        """What a worker sends to :meth:`merged_stats`: its statistics, plus any private counter a share needs."""
        return dict(self._stats)

    def finish_merged(self, merged: dict[str, float], per_rank: list[dict[str, float]]) -> dict[str, float]:
        """Recompute statistics derived from summed counters (a share) after :meth:`merged_stats` summed them."""
        return merged
