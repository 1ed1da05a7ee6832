"""The report of a multi-round run: every metric against the round (rounds.count > 1).

Round 1 is the run itself; round k >= 2 lives in ``<run_dir>/rounds/round-k``. Each round keeps
its own data, results and report; this page joins their results with a ``round`` column and plots
each report metric against the round, one line per mitigation and nonzero bias ratio (ratio 0 has no
augmented row, so its trials do not depend on the round), with 95% t-intervals over seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bias_ray.files import write_frame, write_text
from bias_ray.report.figures import _plt, safe_name, seeds_note
from bias_ray.report.headline import report_metrics
from bias_ray.report.stats import mean_ci_table, t_interval
from bias_ray.report.tables import markdown_table
from bias_ray.spec.layout import RunLayout

CELL = ["round", "bias_type", "bias_ratio", "mitigation"]


def rounds_table(round_dirs: list[Path]) -> pd.DataFrame:
    """Every round's ``results.parquet`` with its round number (1-based, in the order given)."""
    frames = []
    for k, d in enumerate(round_dirs, start=1):
        path = RunLayout(Path(d)).results_path
        if not path.is_file():
            raise FileNotFoundError(f"round {k}: {path} is missing; run the round (bias-ray run resumes it)")
        frames.append(pd.read_parquet(path).assign(round=k))
    return pd.concat(frames, ignore_index=True)


def plot_metric_vs_round(table: pd.DataFrame, metric: str, out: Path) -> Path:
    plt = _plt()
    bias_types = sorted(table["bias_type"].unique())
    fig, axes = plt.subplots(1, len(bias_types), figsize=(4.4 * len(bias_types), 3.6), squeeze=False, sharey=True)
    for ax, bt in zip(axes[0], bias_types):
        sub = table[(table["bias_type"] == bt) & (table["bias_ratio"] > 0)]
        for (mit, ratio), g in sub.groupby(["mitigation", "bias_ratio"], sort=True):
            rounds, means, below, above = [], [], [], []
            for k, cell in g.groupby("round", sort=True):
                iv = t_interval(cell[metric])
                rounds.append(k)
                means.append(iv.mean)
                below.append(iv.mean - iv.low if iv.has_interval else 0.0)
                above.append(iv.high - iv.mean if iv.has_interval else 0.0)
            ax.errorbar(rounds, means, yerr=np.array([below, above]), marker="o", capsize=3,
                        label=f"{mit} @ ratio {ratio:g}")
        ax.set_title(bt, fontsize=9)
        ax.set_xlabel("round")
        ax.set_xticks(sorted(table["round"].unique()))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(metric, fontsize=9)
    fig.suptitle(f"{metric} by round: mean over seeds; {seeds_note(table)}", fontsize=9)
    fig.tight_layout()
    path = out / f"{safe_name(metric)}_vs_round.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def build_rounds_report(run_dir: Path, round_dirs: list[Path]) -> Path:
    """``<run_dir>/rounds/``: ``results.parquet`` (every round), ``summary.csv`` and one figure per metric."""
    out = RunLayout(Path(run_dir)).rounds_dir
    out.mkdir(parents=True, exist_ok=True)
    table = rounds_table(round_dirs)
    write_frame(table, out / "results.parquet")
    ok = table[table["error"].isna()] if "error" in table else table
    metrics = [m for m in report_metrics(ok) if m in ok and ok[m].notna().any()]
    summary = mean_ci_table(ok, metrics, by=CELL)
    write_frame(summary, out / "summary.csv")
    figures = [plot_metric_vs_round(ok, m, out) for m in metrics]
    lines = [f"# {len(round_dirs)} rounds of self-augmentation", "",
             "Round k+1's generator is round k's carried student, merged (`rounds.carry`). Each round's own "
             "report is in its folder: " + ", ".join(f"`{d}`" for d in round_dirs) + ".", "",
             "## Mean over seeds, with the 95% t half-width", "",
             markdown_table(summary[CELL + ["n seeds"] + [c for m in metrics for c in (m, f"{m} ci")]]), ""]
    lines += [f"![{f.stem}]({f.name})" for f in figures]
    write_text(out / "report.md", "\n".join(lines) + "\n")
    return out
