"""The report's tables: compute spent, the "which mitigation wins" table, and Markdown / HTML rendering."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bias_ray.measures.metrics import metric_bounds
from bias_ray.report.stats import row_intervals, t_interval


def compute_table(table: pd.DataFrame, manifest: dict[str, Any] | None,
                  analysis_info: dict[str, Any] | None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Trials, steps and trial wall time per bias type and mitigation; run totals with generation and analysis.

    A cell copied from the trial that trained it (``same_as``, ratio 0) spent nothing: it is counted apart
    (``copied_cells``), not in the trials, steps and seconds.
    """
    copied = table["same_as"].notna() if "same_as" in table else pd.Series(False, index=table.index)
    n_copied = int(copied.sum())
    table = table[~copied]
    agg = {"trials": ("seed", "size")}
    if "steps_run" in table:
        agg["steps"] = ("steps_run", "sum")
    if "trial_wall_s" in table:
        agg["trial_wall_s"] = ("trial_wall_s", "sum")
    per = table.groupby(["bias_type", "mitigation"]).agg(**agg).reset_index().round(2)
    totals = {"trials": float(len(table))}
    if n_copied:
        totals["copied_cells"] = float(n_copied)
    for col in ("steps_run", "trial_wall_s"):
        if col in table:
            totals[col] = float(table[col].sum())
    if "wall_time_s" in table:  # Tune's time_total_s of each trial
        totals["tune_wall_s"] = float(pd.to_numeric(table["wall_time_s"], errors="coerce").sum())
    task_wall = [c for c in table if c.startswith("task/") and c.endswith("/wall_s")]
    if task_wall:
        totals["task_eval_wall_s"] = float(table[task_wall].sum().sum())
    if manifest:
        last = manifest.get("last_run") or {}
        if "wall_s" in last:
            totals["generation_wall_s"] = float(last["wall_s"])
        totals.update({f"generation_{k}": float(manifest[k]) for k in ("rows", "generated_tokens", "engine_seconds")
                       if k in manifest})
    if analysis_info and "wall_s" in analysis_info:
        totals["analysis_wall_s"] = float(analysis_info["wall_s"])
    return per, totals


def wins_tables(paired: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per bias type: rows (metric, mitigation), one column per ratio, cells ``+0.031 [+0.010, +0.052] worse*``.

    The number is the paired difference mitigation - none (value units), or the difference-in-differences
    of :func:`~bias_ray.report.stats.difference_in_differences`; the word says what it means for that
    metric; ``*`` marks a 95% CI that excludes 0; ``clipped`` an interval cut at the metric's range;
    ``n=2 of 3 seeds`` a DiD that left out seeds missing one of its four cells.
    """
    out = {}
    if paired.empty:
        return out
    for bt, g in paired.groupby("bias_type", sort=True):
        g = g.assign(cell=[_wins_cell(r) for _, r in g.iterrows()])
        wide = g.pivot_table(index=["metric", "direction", "mitigation"], columns="bias_ratio", values="cell",
                             aggfunc="first", sort=False)
        wide.columns = [f"ratio {c:g}" for c in wide.columns]
        out[str(bt)] = wide.reset_index()
    return out


def _wins_cell(row) -> str:
    diff, _ = row_intervals(row)
    missing = int(row.get("n_incomplete", 0) or 0)
    if not np.isfinite(diff.mean):
        return f"n/a ({missing} seed(s), none with all four cells)" if missing else "n/a"
    seeds = f" (n={diff.n} of {diff.n + missing} seeds)" if missing else ""
    if not diff.has_interval:
        return f"{diff.mean:+.3f} (n={diff.n}{f' of {diff.n + missing} seeds' if missing else ''}, no interval)"
    mark = "*" if row["verdict"] in ("better", "worse", "differs") else ""
    cut = " clipped" if diff.clipped else ""
    return f"{diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]{cut} {row['verdict']}{mark}{seeds}"


def intervals_by_ratio(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean ± CI of ``metric`` per bias type and ratio, one column per mitigation (the headline table).

    A CI reaching past the metric's range is cut at it and printed ``mean [low, high] clipped``.
    """
    rows = []
    bounds = metric_bounds(metric)
    for (bt, ratio, mit), g in table.groupby(["bias_type", "bias_ratio", "mitigation"], sort=True):
        iv = t_interval(g[metric], bounds=bounds)
        rows.append({"bias_type": bt, "bias_ratio": ratio, "mitigation": mit,
                     "cell": iv.text() if np.isfinite(iv.mean) else "n/a"})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    wide = frame.pivot_table(index=["bias_type", "bias_ratio"], columns="mitigation", values="cell", aggfunc="first")
    return wide.reset_index().rename_axis(columns=None)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    if df.empty:
        return "none"
    df = df.round(4)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join("" if _missing(v) else str(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def html_table(df: pd.DataFrame, cls: str) -> str:
    if df.empty:
        return f'<p class="{cls} empty">none</p>'
    return df.to_html(index=False, classes=cls, na_rep="", float_format=lambda v: f"{v:.4g}")
