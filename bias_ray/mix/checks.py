"""The mix checks: can every planned (bias type, ratio) mix be drawn, before any trial or generation?

:func:`check_mixes` plans every mix of the sweep over a finished job's augmented strata (read
through :mod:`bias_ray.augmented`); :func:`check_planned_mixes` checks the label shares a
generation job is planned to write, before it runs. :func:`real_rows` gives the real rows a mix
draws from, parsed once per process (the trials use it too). The mix arithmetic: :mod:`bias_ray.mix`.
"""

from __future__ import annotations

import functools

import pandas as pd

from bias_ray.data.custom import load_task_data
from bias_ray.mix import mix_counts, mix_plan, reachable_ratio
from bias_ray.spec import DataSpec, SpecError, SweepSpec


@functools.lru_cache(maxsize=4)
def real_rows(data_json: str) -> pd.DataFrame:
    """The real rows (ToxiGen, or the user's data: ``data.task``), parsed once per worker process: a
    reused trial actor does not parse them again. Keyed by the data section's JSON (pydantic models
    are not hashable)."""
    return load_task_data(DataSpec.model_validate_json(data_json))


def _real_train_rows(spec: SweepSpec) -> pd.DataFrame:
    real = real_rows(spec.data.model_dump_json())
    return real[real["split"] == "train"]


def check_mixes(spec: SweepSpec) -> None:
    """Plan every (bias type, ratio) mix before a trial starts, so an impossible one (a ratio that
    ``training.mix_labels: real`` cannot reach) stops the sweep once, with its reason, instead of failing
    every trial at that ratio. Seed 0 stands for all: the per-label counts of a draw do not depend on the seed."""
    from bias_ray.augmented import augmented_strata

    real_train = _real_train_rows(spec)
    tr = spec.training
    for bias_type in (b.name for b in spec.bias_type_specs):
        strata = None
        for ratio in spec.bias_ratios:
            if not mix_counts(ratio, tr.train_size, tr.mix_mode).augmented:
                continue
            strata = augmented_strata(spec, bias_type) if strata is None else strata
            try:
                mix_plan(real_train, strata, ratio, tr.train_size, tr.mix_mode, 0, tr.mix_labels)
            except ValueError as err:
                raise SpecError(f"bias type {bias_type!r}: {err}") from None


def check_planned_mixes(spec: SweepSpec, augmented_shares: dict[int, float]) -> None:
    """Before generation: can ``training.mix_labels: real`` reach every ratio with the label shares the job
    is planned to write? Saves generating (hours, at scale) for a sweep that :func:`check_mixes` would stop."""
    real_shares = _real_train_rows(spec)["label"].value_counts().to_dict()
    limit = reachable_ratio(real_shares, augmented_shares)
    too_high = [r for r in spec.bias_ratios if r > limit]
    if too_high:
        def shares(d: dict) -> str:
            total = sum(d.values())
            return ", ".join(f"label {k}: {v / total:.2f}" for k, v in sorted(d.items()))

        raise SpecError(
            f"bias_ratios: {too_high} cannot be reached with training.mix_labels: real. The generation plan writes "
            f"{shares(augmented_shares)} (generation.stances and the template's labels) and the real training rows "
            f"hold {shares(real_shares)}, so a mix that keeps the real label shares reaches at most ratio "
            f"{limit:.3f}. Lower the ratios, add stances of the other label, or use training.mix_labels: pooled")
