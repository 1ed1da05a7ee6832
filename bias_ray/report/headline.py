"""Which metrics the report covers, the headline fairness metric, and the bias each bias type inherits.

Inheritance is the change of a metric from the lowest bias ratio (0: real data only) to the
highest under the baseline mitigation, paired by seed; *harm* is that change signed so that
positive means worse (``shortfall(at highest) - shortfall(at lowest)``, see
:func:`bias_ray.measures.metrics.shortfall`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bias_ray.catalog import task_listing
from bias_ray.measures.metrics import metric_bounds, metric_direction, shortfall
from bias_ray.report.stats import Interval, difference_bounds, t_interval, verdict


def _headline_task() -> tuple[str, dict]:
    """The task whose ``headline`` entry (resources/tasks.yaml) names the metrics the report leads with."""
    for name, entry in task_listing()["tasks"].items():
        if entry.get("headline"):
            return name, entry["headline"]
    raise ValueError("resources/tasks.yaml: no task declares a `headline` (metric, group, rank, control)")


HEADLINE_TASK, _HEADLINE = _headline_task()


def _column(role: str) -> str:
    return f"task/{HEADLINE_TASK}/{_HEADLINE[role]}"


# The headline task's metrics (HateCheck's): its fairness metric (target_fpr), the group-specific part
# (target - control, which a label-balance shift cannot move: target_excess_fpr), the same by rank, free of
# the classifier's threshold and first where present (target_excess_auc), and the control (other_fpr).
HEADLINE_FIGURE_METRIC = _column("metric")
GROUP_METRIC = _column("group")
AUC_METRIC = _column("rank")
CONTROL_METRIC = _column("control")
GROUP_METRICS = (AUC_METRIC, GROUP_METRIC)
HEADLINE_FIGURE_FILE = _HEADLINE["figure"]
HEADLINE_TITLES = {f"task/{HEADLINE_TASK}/{m}": t for m, t in (_HEADLINE.get("titles") or {}).items()}
_TASK_DESCRIPTIONS = {f"task/{HEADLINE_TASK}/{m}": d for m, d in (_HEADLINE.get("descriptions") or {}).items()}
# First one with data is the headline: the headline task's metric when the sweep ran it, else the trial's own.
HEADLINE_CANDIDATES = {
    HEADLINE_FIGURE_METRIC: _TASK_DESCRIPTIONS[HEADLINE_FIGURE_METRIC],
    "bias_type/fpr_gap": "largest gap in false-positive rate across the bias type's groups (held-out task data)",
    "fpr_gap": "largest gap in false-positive rate across all groups (held-out task data)",
    # a task of named classes (data.labels, Bias in Bios): no positive class, so no false-positive rate
    "bias_type/accuracy_gap": "largest gap in accuracy across the bias type's groups (held-out task data)",
}
# a task of named classes (data.labels, Bias in Bios) has no hate classifier to test: its gap in accuracy per group
ACCURACY_GAP_METRIC = "bias_type/accuracy_gap"
DEFAULT_METRICS = ["macro_f1", "accuracy", "bias_type/fpr_gap", "bias_type/ppr_gap", "bias_type/accuracy_gap"]
UTILITY_METRIC = "macro_f1"
DESCRIPTIONS = {**HEADLINE_CANDIDATES, "macro_f1": "macro-F1 on the held-out rows of the fine-tuning task",
                "accuracy": "accuracy on the held-out rows of the fine-tuning task", **_TASK_DESCRIPTIONS}
BETTER_WORDS = {"higher": "higher is better", "lower": "lower is better", "zero": "closer to 0 is better",
                "half": "closer to 0.5 is better", None: "no declared direction"}


def task_metrics(table: pd.DataFrame) -> list[str]:
    """The ``task/<task>/<metric>`` columns to plot: each listed task's ``report_metrics``, in listing order."""
    from bias_ray.catalog import task_listing

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


def has_values(table: pd.DataFrame, name: str) -> bool:
    """Whether ``table`` has column ``name`` with at least one finite value (an all-nan column is no data)."""
    return name in table and bool(np.isfinite(pd.to_numeric(table[name], errors="coerce")).any())


def headline_metric(table: pd.DataFrame) -> str | None:
    """The first of :data:`HEADLINE_CANDIDATES` with at least one finite value in ``table``."""
    return next((name for name in HEADLINE_CANDIDATES if has_values(table, name)), None)


def group_metric(table: pd.DataFrame) -> str | None:
    """The metric specific to the bias type's groups: the first of :data:`GROUP_METRICS` the results have.

    ``target_excess_auc`` ranks harmless target cases against harmless control cases by the classifier's
    score, so neither a label-balance shift nor a seed's calibration (how much of every group it flags)
    moves it; ``target_excess_fpr = target_fpr - other_fpr`` cancels the label shift but not the
    calibration. Results from before both fall back to :func:`headline_metric`.
    """
    return next((m for m in GROUP_METRICS if has_values(table, m)), None) or headline_metric(table)


def headline_figure_metric(table: pd.DataFrame) -> str | None:
    """What the headline figure plots: the first of :data:`GROUP_METRICS`, else :data:`HEADLINE_FIGURE_METRIC`,
    else (a task of named classes) :data:`ACCURACY_GAP_METRIC`, else None (no figure).

    The group-specific part first, so the figure cannot show a label-balance shift as group bias.
    """
    return next((m for m in (*GROUP_METRICS, HEADLINE_FIGURE_METRIC, ACCURACY_GAP_METRIC) if has_values(table, m)),
                None)


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
