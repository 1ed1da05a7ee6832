"""Mixing real and augmented data so the bias ratio is exactly the augmented share of the mix.

The arithmetic of a mix (counts, the stratified seeded draw, the reachable ratio); the checks that a
sweep's mixes can be drawn, before trials or generation start, are in :mod:`bias_ray.mix.checks`.
"""

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


def largest_remainder(sizes: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to ``n`` in proportion to ``sizes`` (largest remainder, ties by order)."""
    quota = n * sizes / sizes.sum()
    alloc = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - alloc), kind="stable")[: n - alloc.sum()]:
        alloc[i] += 1
    return alloc


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
    alloc = largest_remainder(np.array([len(idx) for _, idx in groups], dtype=float), n)
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


def reachable_ratio(real_shares: dict, augmented_shares: dict) -> float:
    """The largest bias ratio a label-preserving mix can reach: ``min_l p_l / q_l`` over the labels the
    augmented rows hold (``q_l > 0``), capped at 1; ``p_l``, ``q_l`` the real and augmented label shares."""
    real_total, aug_total = sum(real_shares.values()), sum(augmented_shares.values())
    limits = [real_shares.get(label, 0.0) / real_total / (q / aug_total)
              for label, q in augmented_shares.items() if q > 0]
    return min([1.0, *limits])


def label_preserving_real_counts(real: pd.DataFrame, augmented_labels: pd.Series, n_real: int,
                                 ratio: float) -> pd.Series:
    """Real rows per label so the mix has the real data's label shares (``training.mix_labels: real``).

    With ``p_l`` the share of label ``l`` in the real rows, ``N`` the mix size and ``A_l`` the drawn
    augmented rows of label ``l``, the mix takes ``R_l = T_l - A_l`` real rows of label ``l``, where
    ``T_l`` is ``N * p_l`` rounded by largest remainder. So ``P_mix(label) = P_real(label)``, and what
    the augmented rows change is which texts carry each label (for a group: ``P(hate | group)``), not the
    overall label balance. Needs ``A_l <= T_l`` for every label: a ratio above the smallest
    ``p_l / q_l`` (``q_l`` the augmented label share) cannot be reached; the error says the largest that can.
    """
    shares = real["label"].value_counts()
    total = n_real + len(augmented_labels)
    target = pd.Series(largest_remainder(shares.to_numpy(dtype=float), total), index=shares.index)
    drawn = augmented_labels.value_counts().reindex(target.index.union(augmented_labels.unique()), fill_value=0)
    target = target.reindex(drawn.index, fill_value=0)
    short = drawn[drawn > target]
    if len(short):
        limit = reachable_ratio(shares.to_dict(), augmented_labels.value_counts().to_dict())
        label = short.index[0]
        raise ValueError(
            f"bias ratio {ratio} with training.mix_labels: real needs {int(drawn[label])} augmented rows of label "
            f"{label} in a {total}-row mix, but the real data's label shares allow {int(target[label])}; "
            f"the augmented rows reach at most ratio {limit:.3f} this way. Lower the ratio, generate stances "
            "of both labels (generation.stances), or use training.mix_labels: pooled")
    return (target - drawn).loc[lambda c: c > 0]


def mix_plan(real: pd.DataFrame, augmented: pd.DataFrame, ratio: float, size: int, mode: str = "fixed_total",
             seed: int = 0, labels: str = "pooled") -> MixPlan:
    """The rows :func:`mix` takes, from the strata columns alone (the same draws, in the same order).

    A caller that holds only ``label`` and ``group`` of a large augmented set plans the mix and
    then reads the texts of ``augmented`` positions alone; :func:`assemble_mix` builds the frame.
    ``labels``: ``pooled`` draws the real rows by the real data's (label, group) shares, so the mix's
    label balance is whatever real and augmented rows bring; ``real`` keeps the real data's label
    shares in the whole mix (:func:`label_preserving_real_counts`), real rows drawn by group within a label;
    with no augmented row it is the pooled draw, so ratio 0 trains on the same rows in both.
    """
    if labels not in ("pooled", "real"):
        raise ValueError(f"unknown mix_labels {labels!r}; allowed: pooled, real")
    counts = mix_counts(ratio, size, mode)
    rng = np.random.default_rng(seed)
    if counts.augmented and augmented.empty:
        raise ValueError(f"bias ratio {ratio} needs {counts.augmented} augmented rows but none were generated")
    if labels == "pooled" or not counts.augmented:  # without augmented rows both keep the real shares
        real_pos = stratified_positions(real, counts.real, rng)
        aug_pos = stratified_positions(augmented, counts.augmented, rng)
    else:
        aug_pos = stratified_positions(augmented, counts.augmented, rng)
        per_label = label_preserving_real_counts(real, augmented["label"].iloc[aug_pos], counts.real, ratio)
        labels_of_real = real["label"].to_numpy()
        parts = []
        for label, n in per_label.items():
            rows = np.flatnonzero(labels_of_real == label)
            parts.append(rows[stratified_positions(real.iloc[rows], int(n), rng)])
        real_pos = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        rng.shuffle(real_pos)
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
    labels: str = "pooled",
) -> pd.DataFrame:
    """A shuffled training set with exactly ``mix_counts(...)`` real and augmented rows."""
    plan = mix_plan(real, augmented, ratio, size, mode, seed, labels)
    return assemble_mix(real.iloc[plan.real], augmented.iloc[plan.augmented], plan.order)
