"""The findings table that opens the report: one row per bias type, the numbers the summary's sentences tell.

A reader sees at a glance, per bias type, whether the bias was inherited, whether it is specific to
the bias type's groups or a shift of every group, what it cost in utility, and which mitigation
takes it back. Columns, every change paired by seed over the `none` trials at the lowest (``r_lo``)
and highest (``r_hi``) bias ratio, with the 95% t-interval over seeds (:mod:`bias_ray.report.stats`):

- group-specific change: ``metric(none, r_hi, s) - metric(none, r_lo, s)`` of
  :func:`~bias_ray.report.headline.group_metric`: ``task/hatecheck/target_excess_auc`` (harmless target cases
  ranked against harmless control cases by score), else ``task/hatecheck/target_excess_fpr`` (= target FPR -
  control FPR), else the headline metric (the header names the metric);
- control change: the same of ``task/hatecheck/other_fpr`` (only where the results have it);
- utility change: the same of ``macro_f1``;
- mitigation that reduces the inherited change most: per mitigation ``m`` the difference-in-differences at
  ``r_hi`` against `none` and ratio 0 on the group-specific metric,
  ``DiD(m) = [metric(m, r_hi, s) - metric(none, r_hi, s)] - [metric(m, 0, s) - metric(none, 0, s)]``;
  named is the one with the largest improvement
  ``[shortfall(none, r_hi) - shortfall(m, r_hi)] - [shortfall(none, 0) - shortfall(m, 0)]`` among those whose
  verdict is ``better`` (the improvement's 95% CI excludes 0 on the favourable side: lower for a
  lower-is-better metric, toward 0 for a closer-to-0 one such as target_excess_fpr, see
  :func:`~bias_ray.measures.metrics.shortfall`), shown with its DiD and CI; else ``none distinguishable``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bias_ray.report.headline import (
    AUC_METRIC,
    CONTROL_METRIC,
    GROUP_METRIC,
    GROUP_METRICS,
    UTILITY_METRIC,
    Inheritance,
    has_values,
    inheritance,
)
from bias_ray.report.stats import difference_in_differences, row_intervals

NONE_DISTINGUISHABLE = "none distinguishable"


def group_header(metric: str) -> str:
    """The group-specific column's header, naming the metric (and that it is a fallback when it is not the excess)."""
    if metric == AUC_METRIC:
        return f"group-specific change: {metric} (harmless target vs control cases by score; 0.5 = none)"
    if metric == GROUP_METRIC:
        return f"group-specific change: {metric} (target - control FPR)"
    return f"change: {metric} (no {GROUP_METRIC} in the results)"


def mitigation_header(metric: str) -> str:
    return f"mitigation that reduces the inherited change most (DiD on {metric} at the top ratio)"


def change_cell(i: Inheritance | None) -> str:
    """``+0.270 (95% CI [+0.251, +0.289], n=3) worse``: the paired change, its CI and its verdict."""
    if i is None or not np.isfinite(i.change.mean):
        return "n/a"
    word = f" {i.verdict}" if i.change.has_interval else ""
    return f"{i.change.mean:+.3f} ({i.change.bracket()}){word}"


def best_mitigation(did: pd.DataFrame, bias_type: str, metric: str, ratio: float, has_reference: bool = True) -> str:
    """The mitigation whose DiD at ``ratio`` improves ``metric`` most, with a 95% CI excluding 0, or why none is named.

    Favourable follows the DiD rows' ``verdict`` and ``improvement`` (shortfall-based, so for a
    closer-to-0 metric moving toward 0 counts, overshooting past it does not). ``has_reference``:
    the grid has ratio 0, without which there is no DiD.
    """
    if not has_reference:
        return "n/a (no ratio 0 in the grid for a difference-in-differences)"
    rows = (did[(did["bias_type"] == bias_type) & (did["metric"] == metric) & np.isclose(did["bias_ratio"], ratio)]
            if not did.empty else did)
    if rows.empty:
        return f"n/a (no mitigation besides none at ratio {ratio:g})"
    if (rows["direction"] == "unknown").all():
        return "n/a (the metric declares no better direction)"
    better = rows[rows["verdict"] == "better"]
    if better.empty:
        return NONE_DISTINGUISHABLE
    best = better.loc[better["improvement"].idxmax()]
    diff, _ = row_intervals(best)
    return f"{best['mitigation']}: DiD {diff.mean:+.3f} ({diff.bracket()})"


def findings_table(table: pd.DataFrame, metric: str, baseline: str = "none") -> pd.DataFrame:
    """One row per bias type with inheritance on ``metric`` under ``baseline``; the columns of the module docstring.

    Empty when no bias type has ``baseline`` trials at two or more ratios with ``metric``.
    """
    rows = inheritance(table, metric, baseline)
    if not rows:
        return pd.DataFrame()
    extra = [(m, header) for m, header in ((CONTROL_METRIC, f"control change: {CONTROL_METRIC}"),
                                           (UTILITY_METRIC, f"utility change: {UTILITY_METRIC}"))
             if m != metric and has_values(table, m)]
    others = {m: {i.bias_type: i for i in inheritance(table, m, baseline)} for m, _ in extra}
    did = difference_in_differences(table, [metric], baseline=baseline)
    has_reference = bool(np.isclose(table["bias_ratio"], 0.0).any())
    out = []
    for i in rows:
        row = {"bias type": i.bias_type, "ratios": f"{i.low_ratio:g} to {i.high_ratio:g}",
               group_header(metric): change_cell(i)}
        row.update({header: change_cell(others[m].get(i.bias_type)) for m, header in extra})
        row[mitigation_header(metric)] = best_mitigation(did, i.bias_type, metric, i.high_ratio, has_reference)
        out.append(row)
    return pd.DataFrame(out)


def findings_note(metric: str) -> str:
    """The legend under the table: what each column is, in formulas."""
    why = ("the probability that a harmless case about the targeted groups scores above a harmless control case, "
           "a comparison within each classifier, so neither a label-balance shift nor how much of every group a "
           "seed's classifier flags moves it; 0.5 is no group-specific bias"
           if metric == AUC_METRIC else
           "target - control FPR, so a label-balance shift that moves every group's false alarms alike cancels out"
           if metric in GROUP_METRICS else
           f"the results have no `{GROUP_METRIC}`, so this is the headline metric, which a label-balance shift also "
           "moves")
    return (f"Findings per bias type: each change is metric(none, highest ratio) - metric(none, lowest ratio), "
            f"paired by seed, mean (95% CI over seeds) and its verdict by the metric's better direction; "
            f"group-specific: `{metric}` ({why}). The mitigation named reduces the inherited change most: "
            f"DiD(m) = [m - none at the top ratio] - [m - none at ratio 0] on `{metric}`, per seed, with its 95% CI "
            "excluding 0 in the favourable direction (toward 0 for a closer-to-0 metric); "
            f"`{NONE_DISTINGUISHABLE}` when no mitigation's does.")
