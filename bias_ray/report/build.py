"""Build the sweep report: metric vs bias ratio per bias type (a line per mitigation, error bars
over seeds), the results table, and early-stopping counts; as Markdown and self-contained HTML."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

DEFAULT_METRICS = ["macro_f1", "accuracy", "bias_type/fpr_gap", "bias_type/ppr_gap"]


def _safe(name: str) -> str:
    return name.replace("/", "_")


def plot_metric_vs_ratio(table: pd.DataFrame, metric: str, out: Path) -> Path:
    """One panel per bias type; x = bias ratio, y = metric mean over seeds, error bar = std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bias_types = sorted(table["bias_type"].unique())
    fig, axes = plt.subplots(1, len(bias_types), figsize=(4.2 * len(bias_types), 3.4), squeeze=False,
                             sharey=True)
    for ax, bt in zip(axes[0], bias_types):
        sub = table[table["bias_type"] == bt]
        for mit, g in sub.groupby("mitigation", sort=True):
            agg = g.groupby("bias_ratio")[metric].agg(["mean", "std"]).reset_index().sort_values("bias_ratio")
            ax.errorbar(agg["bias_ratio"], agg["mean"], yerr=agg["std"].fillna(0), marker="o", capsize=3,
                        label=str(mit))
        ax.set_title(bt)
        ax.set_xlabel("bias ratio (augmented share)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(title="mitigation", fontsize=8)
    fig.tight_layout()
    path = out / f"{_safe(metric)}_vs_bias_ratio.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_table(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    cols = [m for m in metrics if m in table]
    return (
        table.groupby(["bias_type", "mitigation", "bias_ratio"])[cols]
        .mean()
        .round(4)
        .reset_index()
    )


def build_report(run_dir: str | Path, metrics: list[str] | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and PNG plots under ``run_dir/report``."""
    run_dir = Path(run_dir)
    results = run_dir / "results.parquet"
    if not results.exists():
        raise FileNotFoundError(f"{results} is missing: run `bias-ray sweep SPEC` first")
    table = pd.read_parquet(results)
    if table.empty:
        raise ValueError(f"{results} holds no trials")
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    metrics = [m for m in (metrics or DEFAULT_METRICS) if m in table]
    plots = [plot_metric_vs_ratio(table, m, out) for m in metrics]
    summary = summary_table(table, metrics)
    n_err = int(table["error"].notna().sum()) if "error" in table else 0
    n_stop = int(table["stopped_early"].sum()) if "stopped_early" in table else 0
    header = (
        f"{len(table)} trials; {n_stop} stopped early by the scheduler; {n_err} failed. "
        f"Steps run: {int(table['steps_run'].sum()) if 'steps_run' in table else 'n/a'}."
    )

    md = ["# bias-ray sweep report", "", f"Run: `{run_dir}`", "", header, ""]
    md += [f"![{p.stem}]({p.name})" for p in plots]
    md += ["", "## Mean over seeds", "", markdown_table(summary)]
    (out / "report.md").write_text("\n".join(md) + "\n")

    imgs = "\n".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{html.escape(p.stem)}</figcaption></figure>"
        for p in plots
    )
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}"
    )
    trials = table.drop(columns=[c for c in ("trial_path",) if c in table])
    title = f"bias-ray report: {html.escape(run_dir.name)}"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head><body>
<h1>bias-ray sweep report</h1><p>{html.escape(header)}</p>
<h2>Metric vs bias ratio</h2>{imgs}
<h2>Mean over seeds</h2>{summary.to_html(index=False, classes="summary")}
<h2>All trials</h2>{trials.to_html(index=False, classes="trials")}
</body></html>"""
    (out / "report.html").write_text(page)
    return out



def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
