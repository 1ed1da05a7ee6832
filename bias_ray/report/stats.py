"""Intervals over seeds, paired differences against a baseline mitigation, and rank correlation.

Seeds are the unit of replication: a 95% interval is Student's t over the per-seed values,
``mean ± t_{0.975, n-1} * sd / sqrt(n)``; with one seed there is no interval (``nan``), and no
finding is called an effect. A mitigation is compared with ``none`` trial by trial at the same
bias type, ratio and seed (the same data mix and initialisation), so seed-to-seed variation
cancels out of the difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from bias_ray.evaluate.metrics import metric_direction, shortfall

LEVEL = 0.95
CELL = ["bias_type", "mitigation", "bias_ratio"]


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% t-interval over ``n`` values; ``low``/``high`` are nan when n < 2."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and np.isfinite(self.low)

    @property
    def excludes_zero(self) -> bool:
        return self.has_interval and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 3, signed: bool = False) -> str:
        """``0.712 ± 0.031`` (or ``0.712 (n=1)`` without an interval)."""
        fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
        if not np.isfinite(self.mean):
            return "n/a"
        if not self.has_interval:
            return f"{fmt.format(self.mean)} (n={self.n})"
        return f"{fmt.format(self.mean)} ± {self.half_width:.{digits}f}"

    def bracket(self, digits: int = 3) -> str:
        """``95% CI [low, high], n=3`` (or ``n=1, no interval``)."""
        if not self.has_interval:
            return f"n={self.n}, no interval"
        return f"95% CI [{self.low:+.{digits}f}, {self.high:+.{digits}f}], n={self.n}"


def t_interval(values, level: float = LEVEL) -> Interval:
    """Mean and Student-t interval of the finite values: ``mean ± t_{(1+level)/2, n-1} * sd / sqrt(n)``."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(v.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n)
    half = float(sps.t.ppf((1 + level) / 2, n - 1) * v.std(ddof=1) / np.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def mean_ci_table(table: pd.DataFrame, metrics: list[str], by: list[str] = CELL) -> pd.DataFrame:
    """Per cell of ``by``: for each metric its mean, ``<m> ci`` (the half-width; nan for one seed) and ``n seeds``."""
    rows = []
    for key, g in table.groupby(by, sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["n seeds"] = int(g["seed"].nunique()) if "seed" in g else len(g)
        for m in metrics:
            iv = t_interval(g[m])
            row[m] = iv.mean
            row[f"{m} ci"] = iv.half_width if iv.has_interval else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def format_mean_ci(frame: pd.DataFrame, metrics: list[str], digits: int = 3) -> pd.DataFrame:
    """:func:`mean_ci_table` as text: a row per metric, bias type and mitigation; a ``mean ± ci`` column per ratio."""
    rows = []
    for m in metrics:
        for (bt, mit), g in frame.groupby(["bias_type", "mitigation"], sort=True):
            row = {"metric": m, "bias_type": bt, "mitigation": mit}
            for ratio, mu, ci, n in zip(g["bias_ratio"], g[m], g[f"{m} ci"], g["n seeds"]):
                row[f"ratio {ratio:g}"] = ("n/a" if not np.isfinite(mu) else f"{mu:.{digits}f} (n={n})"
                                           if not np.isfinite(ci) else f"{mu:.{digits}f} ± {ci:.{digits}f}")
            rows.append(row)
    return pd.DataFrame(rows)


def verdict(improvement: Interval, difference: Interval, direction: str | None) -> str:
    """``better``/``worse`` where the 95% CI excludes 0; else ``indistinguishable`` (or ``no interval``, n=1)."""
    if not difference.has_interval:
        return "no interval"
    if direction is None:
        return "differs" if difference.excludes_zero else "indistinguishable"
    if not improvement.excludes_zero:
        return "indistinguishable"
    return "better" if improvement.low > 0 else "worse"


def paired_differences(table: pd.DataFrame, metrics: list[str], baseline: str = "none",
                       over: list[str] = CELL) -> pd.DataFrame:
    """Each mitigation minus ``baseline`` on the same bias type, ratio and seed, per cell of ``over`` and metric.

    Columns: the cell, ``metric``, ``direction``, ``difference`` (mean of value - baseline) with
    ``diff_low``/``diff_high``, ``improvement`` (mean of shortfall(baseline) - shortfall(value),
    positive = better; nan when the direction is unknown) with ``imp_low``/``imp_high``, ``n``
    (pairs) and ``verdict`` (better / worse where the CI excludes 0, else indistinguishable).
    """
    if baseline not in set(table["mitigation"]):
        return pd.DataFrame()
    pair_keys = ["bias_type", "bias_ratio", "seed"]
    base = table[table["mitigation"] == baseline].set_index(pair_keys)
    others = table[table["mitigation"] != baseline]
    rows = []
    for m in metrics if not others.empty else []:
        direction = metric_direction(m)
        joined = others.join(base[[m]].rename(columns={m: "_base"}), on=pair_keys, how="inner")
        joined = joined[np.isfinite(joined[m].astype(float)) & np.isfinite(joined["_base"].astype(float))]
        for key, g in joined.groupby(over, sort=True):
            diff = t_interval(g[m] - g["_base"])
            imp = (t_interval(shortfall(g["_base"], direction) - shortfall(g[m], direction)) if direction
                   else Interval(float("nan"), float("nan"), float("nan"), diff.n))
            rows.append({**dict(zip(over, key if isinstance(key, tuple) else (key,))), "metric": m,
                         "direction": direction or "unknown", "difference": diff.mean, "diff_low": diff.low,
                         "diff_high": diff.high, "improvement": imp.mean, "imp_low": imp.low,
                         "imp_high": imp.high, "n": diff.n, "verdict": verdict(imp, diff, direction)})
    return pd.DataFrame(rows)


def row_intervals(row) -> tuple[Interval, Interval]:
    """The (difference, improvement) intervals of one :func:`paired_differences` row."""
    return (Interval(row["difference"], row["diff_low"], row["diff_high"], int(row["n"])),
            Interval(row["improvement"], row["imp_low"], row["imp_high"], int(row["n"])))


def spearman(x, y) -> tuple[float, int]:
    """Spearman's rank correlation of the pairs where both are finite (average ranks for ties), and n."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(len(x))
    if n < 3:
        return float("nan"), n
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan"), n
    return float(np.corrcoef(rx, ry)[0, 1]), n
