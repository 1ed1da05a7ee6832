"""The report's figures (PNG): metric vs bias ratio with 95% CIs, the better/worse heatmap, misalignment vs harm."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bias_ray.measures.metrics import metric_bounds, metric_direction
from bias_ray.report.headline import BETTER_WORDS
from bias_ray.report.stats import Bounds, t_interval

NEUTRAL = (0.85, 0.85, 0.85, 1.0)  # a metric without a declared direction: neither better nor worse
HEATMAP_CMAP = "RdBu"  # red end = worse, blue end = better


def safe_name(name: str) -> str:
    return name.replace("/", "_")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def seeds_note(table: pd.DataFrame) -> str:
    """What the error bars are, in words, for a caption."""
    n = table["seed"].nunique() if "seed" in table else 1
    return "error bars: 95% CI over seeds (t)" if n >= 2 else "one seed: no interval (add seeds for error bars)"


def error_bars(cells: pd.DataFrame, metric: str, bounds: Bounds | None) -> tuple[list, list, np.ndarray, bool]:
    """Per bias ratio of ``cells`` (one bias type and mitigation): ratio, mean, (below, above) bar lengths, clipped.

    The bars are the 95% t-interval over seeds cut at ``bounds`` (the metric's range), so they may be
    uneven; ``clipped`` is True when any was cut. One seed: no bar (0).
    """
    ratios, means, below, above, clipped = [], [], [], [], False
    for ratio, cell in cells.groupby("bias_ratio", sort=True):
        iv = t_interval(cell[metric], bounds=bounds)
        ratios.append(ratio)
        means.append(iv.mean)
        below.append(iv.mean - iv.low if iv.has_interval else 0.0)
        above.append(iv.high - iv.mean if iv.has_interval else 0.0)
        clipped = clipped or iv.clipped
    return ratios, means, np.array([below, above]), clipped


def clip_note(bounds: Bounds) -> str:
    """The note under a figure whose error bars were cut at the metric's range."""
    return (f"error bars cut at the metric's range [{bounds[0]:g}, {bounds[1]:g}] where the 95% t-interval "
            "reaches past it (the mean is unchanged)")


def plot_metric_vs_ratio(table: pd.DataFrame, metric: str, out: Path, title: str | None = None,
                         filename: str | None = None) -> Path:
    """One panel per bias type; x = bias ratio, y = mean over seeds, error bar = 95% t-interval (none for n=1).

    Bars are cut at the metric's range (:func:`~bias_ray.measures.metrics.metric_bounds`); a note under
    the panels says so when any was.
    """
    plt = _plt()
    bias_types = sorted(table["bias_type"].unique())
    fig, axes = plt.subplots(1, len(bias_types), figsize=(4.2 * len(bias_types), 3.6), squeeze=False,
                             sharey=True)
    mitigations = sorted(table["mitigation"].unique())
    ratios = sorted(table["bias_ratio"].unique())
    dodge = 0.012 * ((max(ratios) - min(ratios)) or 1.0)  # keep the bars of overlapping lines apart
    bounds, any_clipped = metric_bounds(metric), False
    for ax, bt in zip(axes[0], bias_types):
        sub = table[table["bias_type"] == bt]
        for i, mit in enumerate(mitigations):
            g = sub[sub["mitigation"] == mit]
            if g.empty:
                continue
            xs, means, bars, clipped = error_bars(g, metric, bounds)
            any_clipped = any_clipped or clipped
            xs = [x + (i - (len(mitigations) - 1) / 2) * dodge for x in xs]
            ax.errorbar(xs, means, yerr=bars, marker="o", capsize=3, label=str(mit))
        if sub[metric].isna().all():  # e.g. a task without data for this bias type
            ax.text(0.5, 0.5, "no data for this bias type", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(str(bt).replace(".", "\n", 1), fontsize=10)  # a framed cell: bias type, then its framing
        ax.set_xlabel("bias ratio (augmented share)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric}\n({BETTER_WORDS[metric_direction(metric)]})", fontsize=9)
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.suptitle(f"{title or metric}: mean over seeds; {seeds_note(table)}", fontsize=9)
    fig.tight_layout()
    if any_clipped:
        fig.text(0.5, -0.02, clip_note(bounds), ha="center", va="top", fontsize=8)
    # beside the panels, not over them: mitigation labels with parameters are long
    fig.legend(handles, labels, title="mitigation", fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    path = out / (filename or f"{safe_name(metric)}_vs_bias_ratio.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def heatmap_colours(improvement: pd.DataFrame) -> np.ndarray:
    """RGBA per cell: blue = better than ``none``, red = worse, scaled per metric; grey = no declared direction.

    ``improvement`` is mitigation x metric, positive = better (see :func:`~bias_ray.report.stats.paired_differences`).
    """
    from matplotlib import colormaps

    values = improvement.to_numpy(dtype=float)
    with warnings.catch_warnings():  # an all-nan column (no direction) has no scale: it is grey anyway
        warnings.simplefilter("ignore", RuntimeWarning)
        scale = np.nanmax(np.abs(values), axis=0) if len(values) else np.array([])
    scaled = values / np.where(np.isfinite(scale) & (scale > 0), scale, 1)
    colours = colormaps[HEATMAP_CMAP]((np.nan_to_num(scaled) + 1) / 2)
    colours[~np.isfinite(values)] = NEUTRAL
    return colours


def plot_heatmap(pooled: pd.DataFrame, out: Path) -> Path:
    """Mitigation x metric from pooled paired differences: colour = better/worse, number = the raw change.

    ``pooled`` has one row per (mitigation, metric) with ``difference``, ``improvement`` and ``verdict``.
    """
    plt = _plt()
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    delta = pooled.pivot(index="mitigation", columns="metric", values="difference")
    metrics = list(dict.fromkeys(pooled["metric"]))
    delta = delta[metrics]
    improvement = pooled.pivot(index="mitigation", columns="metric", values="improvement")[metrics]
    marked = pooled.pivot(index="mitigation", columns="metric", values="verdict")[metrics].isin(
        ["better", "worse", "differs"])
    colours = heatmap_colours(improvement)
    fig, ax = plt.subplots(figsize=(1.15 * len(metrics) + 3.5, 0.6 * len(delta) + 2.6))
    ax.imshow(colours, aspect="auto")
    ax.set_xticks(range(len(metrics)), metrics, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(delta)), delta.index)
    values = delta.to_numpy(dtype=float)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            text = "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:+.3f}" + ("*" if marked.iloc[i, j] else "")
            dark = sum(colours[i, j, :3]) < 1.2
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_title("change vs mitigation 'none' (same bias type, ratio, seed; mean over all)\n"
                 "colour: blue = better, red = worse, by each metric's direction; * = 95% CI excludes 0",
                 fontsize=9)
    sm = plt.cm.ScalarMappable(cmap=colormaps[HEATMAP_CMAP], norm=Normalize(-1, 1))
    bar = fig.colorbar(sm, ax=ax, ticks=[-1, 0, 1], fraction=0.05)
    bar.ax.set_yticklabels(["worse", "no change", "better"], fontsize=8)
    if not np.isfinite(improvement.to_numpy(dtype=float)).all():
        ax.legend(handles=[Patch(color=NEUTRAL, label="grey: no declared direction")], fontsize=7,
                  loc="upper center", bbox_to_anchor=(0.5, -0.35), frameon=False)
    fig.tight_layout()
    path = out / "mitigation_heatmap.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_misalignment_vs_harm(frame: pd.DataFrame, measures: dict[str, str], correlations: dict[str, tuple],
                              harm_label: str, out: Path) -> Path:
    """One panel per misalignment measure: x = the measure, y = harm (positive = worse) with its 95% CI."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(measures), figsize=(3.8 * len(measures), 3.4), squeeze=False, sharey=True)
    bars = np.array([(frame["harm"] - frame["harm_low"]).fillna(0), (frame["harm_high"] - frame["harm"]).fillna(0)])
    for ax, (col, label) in zip(axes[0], measures.items()):  # uneven bars where the harm's CI was cut at its range
        ax.errorbar(frame[col], frame["harm"], yerr=bars, fmt="o", capsize=3)
        for x, y, name in zip(frame[col], frame["harm"], frame["bias_type"]):
            ax.annotate(str(name), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        rho, n = correlations[col]
        ax.set_title(f"{label}\nSpearman rho = {rho:+.2f} (n={n})" if np.isfinite(rho) else f"{label}\n(n={n})",
                     fontsize=9)
        ax.set_xlabel(col)
        ax.axhline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(harm_label, fontsize=8)
    fig.tight_layout()
    path = out / "misalignment_vs_harm.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
