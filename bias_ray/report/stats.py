"""Intervals over seeds, paired differences and difference-in-differences against a baseline, rank correlation.

Seeds are the unit of replication: a 95% interval is Student's t over the per-seed values,
``mean ± t_{0.975, n-1} * sd / sqrt(n)``; with one seed there is no interval (``nan``), and no
finding is called an effect. A mitigation is compared with ``none`` trial by trial at the same
bias type, ratio and seed (the same data mix and initialisation), so seed-to-seed variation
cancels out of the difference.

The plain difference ``metric(m, r) - metric(none, r)`` mixes two things: what ``m`` does to the
bias inherited from augmented data, and any shift ``m`` causes with no augmented data at all (a
token changes the classifier's calibration at ratio 0 too). The difference-in-differences against
ratio 0 takes the second out, per seed ``s``::

    DiD(m, r) = [metric(m, r, s) - metric(none, r, s)] - [metric(m, 0, s) - metric(none, 0, s)]
              = harm(m, r, s) - harm(none, r, s),   harm(x, r, s) = metric(x, r, s) - metric(x, 0, s)

then mean ± 95% t-interval over the seeds that have all four cells.

Where a metric has a range (:func:`bias_ray.measures.metrics.metric_bounds`, e.g. [0, 1] for a rate),
interval ends are cut at it and marked ``clipped`` (the mean is never changed): the range itself for
a value, ``±(high - low)`` for a difference of two values, ``±2 (high - low)`` for a
difference-in-differences of four.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from bias_ray.measures.metrics import metric_bounds, metric_direction, shortfall

LEVEL = 0.95
CELL = ["bias_type", "mitigation", "bias_ratio"]
Bounds = tuple[float, float]


def difference_bounds(bounds: Bounds | None, terms: int = 1) -> Bounds | None:
    """The range of a signed sum of ``2 * terms`` values in ``bounds``: ``±terms * (high - low)``.

    A paired difference ``a - b`` is one term (``[-1, 1]`` for a rate); a difference-in-differences
    ``(a - b) - (c - d)`` is two (``[-2, 2]``: a=1, b=0, c=0, d=1 reaches 2).
    """
    if bounds is None:
        return None
    width = terms * (bounds[1] - bounds[0])
    return (-width, width)


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% t-interval over ``n`` values; ``low``/``high`` are nan when n < 2.

    ``clipped``: an end was cut at the metric's range ``bounds`` (then ``low``/``high`` are the cut ends).
    """

    mean: float
    low: float
    high: float
    n: int
    clipped: bool = False
    bounds: Bounds | None = None

    def clip(self, bounds: Bounds | None) -> Interval:
        """The interval with its ends cut at ``bounds`` (the mean unchanged); itself when nothing is cut."""
        if bounds is None or not self.has_interval:
            return self
        low, high = max(self.low, bounds[0]), min(self.high, bounds[1])
        if low == self.low and high == self.high:
            return self
        return Interval(self.mean, low, high, self.n, clipped=True, bounds=bounds)

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
        """``0.712 ± 0.031``; ``0.591 [0.000, 1.000] clipped`` when cut at the range; ``0.712 (n=1)`` for one value."""
        fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
        if not np.isfinite(self.mean):
            return "n/a"
        if not self.has_interval:
            return f"{fmt.format(self.mean)} (n={self.n})"
        if self.clipped:
            return f"{fmt.format(self.mean)} [{fmt.format(self.low)}, {fmt.format(self.high)}] clipped"
        return f"{fmt.format(self.mean)} ± {self.half_width:.{digits}f}"

    def bracket(self, digits: int = 3) -> str:
        """``95% CI [low, high], n=3`` (``..., clipped to [-1, 1], n=3`` when cut; ``n=1, no interval``)."""
        if not self.has_interval:
            return f"n={self.n}, no interval"
        cut = f", clipped to [{self.bounds[0]:g}, {self.bounds[1]:g}]" if self.clipped and self.bounds else ""
        return f"95% CI [{self.low:+.{digits}f}, {self.high:+.{digits}f}]{cut}, n={self.n}"


def t_interval(values, level: float = LEVEL, bounds: Bounds | None = None) -> Interval:
    """Mean and Student-t interval of the finite values: ``mean ± t_{(1+level)/2, n-1} * sd / sqrt(n)``.

    With ``bounds`` the ends are cut at that range (see :meth:`Interval.clip`).
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(v.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n)
    half = float(sps.t.ppf((1 + level) / 2, n - 1) * v.std(ddof=1) / np.sqrt(n))
    return Interval(mean, mean - half, mean + half, n).clip(bounds)


def mean_ci_table(table: pd.DataFrame, metrics: list[str], by: list[str] = CELL) -> pd.DataFrame:
    """Per cell of ``by``: each metric's mean, ``<m> ci`` (the t half-width; nan for one seed), ``<m> low`` and
    ``<m> high`` (the interval's ends, cut at the metric's range, :func:`metric_bounds`) and ``n seeds``."""
    rows = []
    for key, g in table.groupby(by, sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["n seeds"] = int(g["seed"].nunique()) if "seed" in g else len(g)
        for m in metrics:
            raw = t_interval(g[m])
            iv = raw.clip(metric_bounds(m))
            row[m] = iv.mean
            row[f"{m} ci"] = raw.half_width if raw.has_interval else float("nan")
            row[f"{m} low"], row[f"{m} high"] = iv.low, iv.high
        rows.append(row)
    return pd.DataFrame(rows)


def format_mean_ci(frame: pd.DataFrame, metrics: list[str], digits: int = 3) -> pd.DataFrame:
    """:func:`mean_ci_table` as text: a row per metric, bias type and mitigation; a column per ratio with
    ``mean ± ci``, or ``mean [low, high] clipped`` where the interval was cut at the metric's range."""
    rows = []
    for m in metrics:
        for (bt, mit), g in frame.groupby(["bias_type", "mitigation"], sort=True):
            row = {"metric": m, "bias_type": bt, "mitigation": mit}
            for ratio, mu, ci, low, high, n in zip(g["bias_ratio"], g[m], g[f"{m} ci"], g[f"{m} low"],
                                                    g[f"{m} high"], g["n seeds"]):
                clipped = bool(np.isfinite(ci) and (low > mu - ci or high < mu + ci))
                row[f"ratio {ratio:g}"] = Interval(mu, low, high, int(n), clipped=clipped).text(digits)
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


def _comparison_row(cell: dict, metric: str, direction: str | None, bound: Bounds | None, value, shortfalls,
                    **extra) -> dict:
    """One comparison row from per-seed differences ``value`` and per-seed improvements ``shortfalls``."""
    diff = t_interval(value, bounds=bound)
    imp = (t_interval(shortfalls, bounds=bound) if direction
           else Interval(float("nan"), float("nan"), float("nan"), diff.n))
    return {**cell, "metric": metric, "direction": direction or "unknown", "difference": diff.mean,
            "diff_low": diff.low, "diff_high": diff.high, "improvement": imp.mean, "imp_low": imp.low,
            "imp_high": imp.high, "n": diff.n, **extra, "clipped": diff.clipped,
            "bound": bound[1] if bound else float("nan"), "verdict": verdict(imp, diff, direction)}


def paired_differences(table: pd.DataFrame, metrics: list[str], baseline: str = "none",
                       over: list[str] = CELL) -> pd.DataFrame:
    """Each mitigation minus ``baseline`` on the same bias type, ratio and seed, per cell of ``over`` and metric.

    Columns: the cell, ``metric``, ``direction``, ``difference`` (mean of value - baseline) with
    ``diff_low``/``diff_high``, ``improvement`` (mean of shortfall(baseline) - shortfall(value),
    positive = better; nan when the direction is unknown) with ``imp_low``/``imp_high``, ``n``
    (pairs), ``clipped`` (the difference's CI was cut at ``±bound``, the metric's range width; nan
    bound = no range) and ``verdict`` (better / worse where the CI excludes 0, else indistinguishable).
    """
    if baseline not in set(table["mitigation"]):
        return pd.DataFrame()
    pair_keys = ["bias_type", "bias_ratio", "seed"]
    base = table[table["mitigation"] == baseline].set_index(pair_keys)
    others = table[table["mitigation"] != baseline]
    rows = []
    for m in metrics if not others.empty else []:
        direction, bound = metric_direction(m), difference_bounds(metric_bounds(m), terms=1)
        joined = others.join(base[[m]].rename(columns={m: "_base"}), on=pair_keys, how="inner")
        joined = joined[np.isfinite(joined[m].astype(float)) & np.isfinite(joined["_base"].astype(float))]
        for key, g in joined.groupby(over, sort=True):
            gains = shortfall(g["_base"], direction) - shortfall(g[m], direction) if direction else None
            rows.append(_comparison_row(dict(zip(over, key if isinstance(key, tuple) else (key,))), m, direction,
                                        bound, g[m] - g["_base"], gains))
    return pd.DataFrame(rows)


def difference_in_differences(table: pd.DataFrame, metrics: list[str], baseline: str = "none",
                              reference_ratio: float = 0.0) -> pd.DataFrame:
    """How much each mitigation changes the harm augmented data causes, net of its shift at ``reference_ratio``.

    Per bias type, mitigation ``m``, ratio ``r != reference_ratio`` and seed ``s`` (the same seed in all four cells)::

        DiD(m, r, s) = [metric(m, r, s) - metric(none, r, s)] - [metric(m, 0, s) - metric(none, 0, s)]

    then mean ± 95% t-interval over the seeds with a finite value in all four cells (``n``);
    ``n_incomplete`` counts the seeds seen in some but not all four, left out. A constant shift of
    ``m`` at every ratio (a calibration change) gives a plain difference but a DiD of 0.
    ``improvement`` is the same on shortfalls, signed so that positive = ``m`` reduces the inherited
    harm (for a lower-is-better metric, a negative DiD); ``verdict``, ``clipped`` (cut at ``±bound``,
    twice the metric's range width) and the other columns as in :func:`paired_differences`, plus
    ``reference_ratio``. Empty when the table has no ``baseline`` or no trial at ``reference_ratio``.
    """
    cell_keys = ["bias_type", "mitigation", "bias_ratio", "seed"]
    if baseline not in set(table["mitigation"]) or not np.isclose(table["bias_ratio"], reference_ratio).any():
        return pd.DataFrame()
    repeated = table.duplicated(cell_keys)
    if repeated.any():
        first = table.loc[repeated, cell_keys].iloc[0].to_dict()
        raise ValueError(f"results hold {int(repeated.sum())} extra trial(s) for the same bias type, mitigation, ratio "
                         f"and seed (first: {first}); keep one trial per cell and seed to pair them")
    table = table.assign(bias_ratio=np.where(np.isclose(table["bias_ratio"], reference_ratio), reference_ratio,
                                             table["bias_ratio"]))
    rows = []
    for m in metrics:
        direction, bound = metric_direction(m), difference_bounds(metric_bounds(m), terms=2)
        values = pd.to_numeric(table[m], errors="coerce")
        cells = table.assign(_v=values)[np.isfinite(values)].set_index(cell_keys)["_v"].sort_index()
        for bt, per_bt in cells.groupby(level="bias_type", sort=True):
            per_bt = per_bt.droplevel("bias_type")
            mitigations = [x for x in per_bt.index.get_level_values("mitigation").unique() if x != baseline]
            for mit in sorted(mitigations, key=str):
                ratios = sorted(set(per_bt.loc[mit].index.get_level_values("bias_ratio")) - {reference_ratio})
                for r in ratios:
                    four = [_by_seed(per_bt, mit, r), _by_seed(per_bt, baseline, r),
                            _by_seed(per_bt, mit, reference_ratio), _by_seed(per_bt, baseline, reference_ratio)]
                    seen = set().union(*(f.index for f in four))
                    seeds = sorted(set.intersection(*(set(f.index) for f in four)))
                    a, b, c, d = (f.reindex(seeds).to_numpy(dtype=float) for f in four)
                    gains = ((shortfall(b, direction) - shortfall(a, direction))
                             - (shortfall(d, direction) - shortfall(c, direction))) if direction else None
                    rows.append(_comparison_row({"bias_type": bt, "mitigation": mit, "bias_ratio": r}, m, direction,
                                                bound, (a - b) - (c - d), gains, n_incomplete=len(seen) - len(seeds),
                                                reference_ratio=reference_ratio))
    return pd.DataFrame(rows)


def _by_seed(cells: pd.Series, mitigation, ratio: float) -> pd.Series:
    """The values of one (mitigation, ratio) cell indexed by seed; empty when the cell is missing."""
    try:
        return cells.loc[(mitigation, ratio)]
    except KeyError:
        return pd.Series(dtype=float)


def row_intervals(row) -> tuple[Interval, Interval]:
    """The (difference, improvement) intervals of one :func:`paired_differences` / DiD row (clipping kept)."""
    bound = row.get("bound", float("nan"))
    bounds = (-bound, bound) if np.isfinite(bound) else None
    clipped = bool(row.get("clipped", False))
    return (Interval(row["difference"], row["diff_low"], row["diff_high"], int(row["n"]), clipped,
                     bounds if clipped else None),
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
