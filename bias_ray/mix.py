"""Mixing real and augmented data so the bias ratio is exactly the augmented share of the mix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

STRATA = ["label", "group"]


@dataclass(frozen=True)
class MixCounts:
    real: int
    augmented: int

    @property
    def ratio(self) -> float:
        total = self.real + self.augmented
        return self.augmented / total if total else 0.0


def mix_counts(ratio: float, size: int, mode: str) -> MixCounts:
    """Exact row counts. ``fixed_total``: size rows in all; ``fixed_real``: size real rows plus augmented."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"bias ratio {ratio} is outside [0, 1]")
    if mode == "fixed_total":
        n_aug = round(ratio * size)
        return MixCounts(real=size - n_aug, augmented=n_aug)
    if mode == "fixed_real":
        if ratio >= 1.0:
            raise ValueError("mix_mode fixed_real cannot reach bias ratio 1 (it would need infinite augmented rows)")
        return MixCounts(real=size, augmented=round(ratio * size / (1.0 - ratio)))
    raise ValueError(f"unknown mix mode {mode!r}; allowed: fixed_total, fixed_real")


def stratified_positions(df: pd.DataFrame, n: int, rng: np.random.Generator,
                         strata: list[str] = STRATA) -> np.ndarray:
    """Positions of ``n`` rows of ``df`` whose strata shares follow ``df``'s (largest remainder).

    With replacement only if a stratum is short. Only the strata columns of ``df`` are read, so a
    frame of just those columns draws the same positions as the full frame.
    """
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if df.empty:
        raise ValueError(f"cannot draw {n} rows from an empty set")
    keys = [k for k in strata if k in df.columns]
    groups = list(df.groupby(keys, sort=True).indices.items()) if keys else [((), np.arange(len(df)))]
    sizes = np.array([len(idx) for _, idx in groups], dtype=float)
    quota = n * sizes / sizes.sum()
    alloc = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - alloc), kind="stable")[: n - alloc.sum()]:
        alloc[i] += 1
    picked = []
    for (_, idx), k in zip(groups, alloc):
        if k:
            picked.append(rng.choice(idx, size=k, replace=k > len(idx)))
    order = np.concatenate(picked)
    rng.shuffle(order)
    return order


def stratified_sample(df: pd.DataFrame, n: int, rng: np.random.Generator, strata: list[str] = STRATA) -> pd.DataFrame:
    """``n`` rows whose strata shares follow ``df``'s (largest remainder); with replacement only if short."""
    return df.iloc[stratified_positions(df, n, rng, strata)]


@dataclass(frozen=True)
class MixPlan:
    """Which rows a mix takes: positions into the real and augmented frames, then the final order."""

    real: np.ndarray
    augmented: np.ndarray
    order: np.ndarray  # a permutation of the concatenation [real rows, augmented rows]


def mix_plan(real: pd.DataFrame, augmented: pd.DataFrame, ratio: float, size: int, mode: str = "fixed_total",
             seed: int = 0) -> MixPlan:
    """The rows :func:`mix` takes, from the strata columns alone (the same draws, in the same order).

    A caller that holds only ``label`` and ``group`` of a large augmented set plans the mix and
    then reads the texts of ``augmented`` positions alone; :func:`assemble_mix` builds the frame.
    """
    counts = mix_counts(ratio, size, mode)
    rng = np.random.default_rng(seed)
    if counts.augmented and augmented.empty:
        raise ValueError(f"bias ratio {ratio} needs {counts.augmented} augmented rows but none were generated")
    real_pos = stratified_positions(real, counts.real, rng)
    aug_pos = stratified_positions(augmented, counts.augmented, rng)
    return MixPlan(real_pos, aug_pos, rng.permutation(len(real_pos) + len(aug_pos)))


def assemble_mix(real_rows: pd.DataFrame, augmented_rows: pd.DataFrame, order: np.ndarray) -> pd.DataFrame:
    """The mix frame from the drawn rows (in draw order) and the plan's final order."""
    parts = [real_rows.assign(is_augmented=False), augmented_rows.assign(is_augmented=True)]
    mixed = pd.concat(parts, ignore_index=True)
    return mixed.iloc[order].reset_index(drop=True)


def mix(
    real: pd.DataFrame,
    augmented: pd.DataFrame,
    ratio: float,
    size: int,
    mode: str = "fixed_total",
    seed: int = 0,
) -> pd.DataFrame:
    """A shuffled training set with exactly ``mix_counts(...)`` real and augmented rows."""
    plan = mix_plan(real, augmented, ratio, size, mode, seed)
    return assemble_mix(real.iloc[plan.real], augmented.iloc[plan.augmented], plan.order)
