"""Which metrics the report covers, the headline fairness metric, and the bias each bias type inherits.

Inheritance is the change of a metric from the lowest bias ratio (0: real data only) to the
highest under the baseline mitigation, paired by seed; *harm* is that change signed so that
positive means worse (``shortfall(at highest) - shortfall(at lowest)``, see
:func:`bias_ray.evaluate.metrics.shortfall`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bias_ray.evaluate.metrics import metric_bounds, metric_direction, shortfall
from bias_ray.report.stats import Interval, difference_bounds, t_interval, verdict

# First one with data is the headline: HateCheck's targeted-group FPR when the sweep ran HateCheck.
HEADLINE_CANDIDATES = {
    "task/hatecheck/target_fpr": "HateCheck false-positive rate on non-hateful cases that target the bias type's "
                                 "groups",
    "bias_type/fpr_gap": "largest gap in false-positive rate across the bias type's groups (held-out ToxiGen)",
    "fpr_gap": "largest gap in false-positive rate across all groups (held-out ToxiGen)",
}
HEADLINE_FIGURE_METRIC = "task/hatecheck/target_fpr"
DEFAULT_METRICS = ["macro_f1", "accuracy", "bias_type/fpr_gap", "bias_type/ppr_gap"]
UTILITY_METRIC = "macro_f1"
DESCRIPTIONS = {**HEADLINE_CANDIDATES, "macro_f1": "macro-F1 on held-out ToxiGen",
                "accuracy": "accuracy on held-out ToxiGen"}
BETTER_WORDS = {"higher": "higher is better", "lower": "lower is better", "zero": "closer to 0 is better",
                "half": "closer to 0.5 is better", None: "no declared direction"}


def task_metrics(table: pd.DataFrame) -> list[str]:
    """The ``task/<task>/<metric>`` columns to plot: each listed task's ``report_metrics``, in listing order."""
    from bias_ray.evaluate.listing import task_listing

    out = []
    for name, entry in task_listing()["tasks"].items():
        out += [f"task/{name}/{m}" for m in entry.get("report_metrics", []) if f"task/{name}/{m}" in table]
    return out


def report_metrics(table: pd.DataFrame, metrics: list[str] | None = None) -> list[str]:
    """The metrics the report covers: given ones, else the defaults, the tasks' and HateCheck's headline."""
    chosen = metrics or DEFAULT_METRICS + task_metrics(table) + [HEADLINE_FIGURE_METRIC]
    return list(dict.fromkeys(m for m in chosen if m in table))


def every_metric(table: pd.DataFrame) -> list[str]:
    """Every numeric metric column: those with a declared direction, and every task score (not its time or rows)."""
    return [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c]) and (
        metric_direction(c) is not None or (c.startswith("task/") and not c.endswith(("/wall_s", "/n"))))]


def headline_metric(table: pd.DataFrame) -> str | None:
    """The first of :data:`HEADLINE_CANDIDATES` with at least one finite value in ``table``."""
    for name in HEADLINE_CANDIDATES:
        if name in table and np.isfinite(pd.to_numeric(table[name], errors="coerce")).any():
            return name
    return None


@dataclass(frozen=True)
class Inheritance:
    """A metric under the baseline at the lowest and highest ratio, their paired change, and its harm."""

    bias_type: str
    metric: str
    direction: str | None
    low_ratio: float
    high_ratio: float
    at_low: Interval
    at_high: Interval
    change: Interval
    harm: Interval  # positive = worse; nan without a direction

    @property
    def verdict(self) -> str:
        """``worse``/``better`` where the CI of the change excludes 0, else ``indistinguishable``."""
        improvement = Interval(-self.harm.mean, -self.harm.high, -self.harm.low, self.harm.n)
        return verdict(improvement, self.change, self.direction)


def inheritance(table: pd.DataFrame, metric: str, baseline: str = "none") -> list[Inheritance]:
    """Per bias type: ``metric`` under ``baseline`` at the lowest and highest ratio, and the change, paired by seed.

    Intervals are cut at the metric's range (values) and at ``±`` its width (the change and the harm).
    """
    direction, bounds = metric_direction(metric), metric_bounds(metric)
    change_bounds = difference_bounds(bounds)
    out = []
    base = table[table["mitigation"] == baseline]
    for bt, g in base.groupby("bias_type", sort=True):
        g = g[np.isfinite(pd.to_numeric(g[metric], errors="coerce"))]
        ratios = sorted(g["bias_ratio"].unique())
        if len(ratios) < 2:
            continue
        lo, hi = g[g["bias_ratio"] == ratios[0]], g[g["bias_ratio"] == ratios[-1]]
        paired = hi[["seed", metric]].merge(lo[["seed", metric]], on="seed", suffixes=("", "_low"))
        after, before = paired[metric].astype(float), paired[f"{metric}_low"].astype(float)
        harm = (t_interval(shortfall(after, direction) - shortfall(before, direction), bounds=change_bounds)
                if direction else Interval(float("nan"), float("nan"), float("nan"), len(paired)))
        out.append(Inheritance(str(bt), metric, direction, float(ratios[0]), float(ratios[-1]),
                               t_interval(lo[metric], bounds=bounds), t_interval(hi[metric], bounds=bounds),
                               t_interval(after - before, bounds=change_bounds), harm))
    return out
