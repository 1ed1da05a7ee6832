"""Build the sweep report under ``<run_dir>/report``: Markdown, PNG plots and one self-contained HTML page.

Sections: metric vs bias ratio per bias type (a line per mitigation, error bars = std over
seeds), a mitigation x metric heatmap of the change against ``none``, the misalignment analysis
(when ``<run_dir>/analysis`` exists), early-stopped and failed trials, and the compute spent.
The HTML inlines every image as a data URI, so it opens offline from anywhere.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_METRICS = ["macro_f1", "accuracy", "bias_type/fpr_gap", "bias_type/ppr_gap"]
GRID = ["bias_type", "bias_ratio", "mitigation", "seed"]


def _safe(name: str) -> str:
    return name.replace("/", "_")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def task_metrics(table: pd.DataFrame) -> list[str]:
    """The ``task/<task>/<metric>`` columns to plot: each listed task's ``report_metrics``, in listing order."""
    from bias_ray.evaluate.tasks import task_listing

    out = []
    for name, entry in task_listing()["tasks"].items():
        out += [f"task/{name}/{m}" for m in entry.get("report_metrics", []) if f"task/{name}/{m}" in table]
    return out


def plot_metric_vs_ratio(table: pd.DataFrame, metric: str, out: Path) -> Path:
    """One panel per bias type; x = bias ratio, y = metric mean over seeds, error bar = std."""
    plt = _plt()
    bias_types = sorted(table["bias_type"].unique())
    fig, axes = plt.subplots(1, len(bias_types), figsize=(4.2 * len(bias_types), 3.4), squeeze=False,
                             sharey=True)
    for ax, bt in zip(axes[0], bias_types):
        sub = table[table["bias_type"] == bt]
        for mit, g in sub.groupby("mitigation", sort=True):
            agg = g.groupby("bias_ratio")[metric].agg(["mean", "std"]).reset_index().sort_values("bias_ratio")
            ax.errorbar(agg["bias_ratio"], agg["mean"], yerr=agg["std"].fillna(0), marker="o", capsize=3,
                        label=str(mit))
        if sub[metric].isna().all():  # e.g. a task without data for this bias type
            ax.text(0.5, 0.5, "no data for this bias type", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(bt)
        ax.set_xlabel("bias ratio (augmented share)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.tight_layout()
    # beside the panels, not over them: mitigation labels with parameters are long
    fig.legend(handles, labels, title="mitigation", fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    path = out / f"{_safe(metric)}_vs_bias_ratio.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def change_vs_none(table: pd.DataFrame, metrics: list[str], baseline: str = "none") -> pd.DataFrame:
    """Mean change of each metric against ``baseline`` over matching (bias type, ratio) cells; rows = mitigations."""
    if baseline not in set(table["mitigation"]):
        return pd.DataFrame()
    cells = table.groupby(["bias_type", "bias_ratio", "mitigation"])[metrics].mean()
    base = cells.xs(baseline, level="mitigation")
    rows = {}
    for mit in sorted(set(table["mitigation"]) - {baseline}):
        diff = cells.xs(mit, level="mitigation") - base
        rows[mit] = diff.mean()
    return pd.DataFrame(rows).T.rename_axis("mitigation") if rows else pd.DataFrame()


def plot_heatmap(delta: pd.DataFrame, out: Path) -> Path:
    """Mitigation x metric; colour = change scaled per metric, number = the change itself."""
    plt = _plt()
    values = delta.to_numpy(dtype=float)
    scale = np.nanmax(np.abs(values), axis=0)
    scaled = values / np.where(scale > 0, scale, 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(delta.columns) + 2.5, 0.6 * len(delta) + 2.2))
    ax.imshow(np.nan_to_num(scaled), cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(delta.columns)), delta.columns, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(delta)), delta.index)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:+.3f}", ha="center", va="center",
                    fontsize=7, color="white" if abs(scaled[i, j]) > 0.6 else "black")
    ax.set_title("change vs mitigation 'none' (mean over bias types, ratios, seeds); blue = higher", fontsize=9)
    fig.tight_layout()
    path = out / "mitigation_heatmap.png"
    fig.savefig(path, dpi=100)
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


def compute_table(table: pd.DataFrame, run_dir: Path) -> tuple[pd.DataFrame, dict[str, float]]:
    """Trials, steps and trial wall time per bias type and mitigation, and run totals with generation."""
    agg = {"trials": ("seed", "size")}
    if "steps_run" in table:
        agg["steps"] = ("steps_run", "sum")
    if "trial_wall_s" in table:
        agg["trial_wall_s"] = ("trial_wall_s", "sum")
    per = table.groupby(["bias_type", "mitigation"]).agg(**agg).reset_index().round(2)
    totals = {"trials": float(len(table))}
    for col in ("steps_run", "trial_wall_s"):
        if col in table:
            totals[col] = float(table[col].sum())
    task_wall = [c for c in table if c.startswith("task/") and c.endswith("/wall_s")]
    if task_wall:
        totals["task_eval_wall_s"] = float(table[task_wall].sum().sum())
    manifest = run_dir / "data" / "augmented" / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        totals.update({f"generation_{k}": float(m[k]) for k in ("wall_s", "rows", "generated_tokens") if k in m})
    return per, totals


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.stem)}</figcaption></figure>")


def _html_table(df: pd.DataFrame, cls: str) -> str:
    if df.empty:
        return f'<p class="{cls} empty">none</p>'
    return df.to_html(index=False, classes=cls, na_rep="", float_format=lambda v: f"{v:.4g}")


def build_report(run_dir: str | Path, metrics: list[str] | None = None, wandb: str = "disabled",
                 project: str = "bias-ray") -> Path:
    """Write ``report.md``, ``report.html`` and PNG plots under ``run_dir/report``; log tables to W&B if asked."""
    run_dir = Path(run_dir)
    results = run_dir / "results.parquet"
    if not results.exists():
        raise FileNotFoundError(f"{results} is missing: run `bias-ray sweep SPEC` first")
    table = pd.read_parquet(results)
    if table.empty:
        raise ValueError(f"{results} holds no trials")
    missing = set(GRID[:3]) - set(table.columns)
    if missing:
        raise ValueError(f"{results} lacks columns {sorted(missing)}; was it written by `bias-ray sweep`?")
    if "seed" not in table:
        table["seed"] = 0
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    failed = table["error"].notna() if "error" in table else pd.Series(False, index=table.index)
    ok = table[~failed]
    metrics = [m for m in (metrics or DEFAULT_METRICS + task_metrics(table)) if m in table]
    plots = [plot_metric_vs_ratio(ok, m, out) for m in metrics] if len(ok) else []
    summary = summary_table(ok, metrics)
    delta = change_vs_none(ok, metrics) if metrics else pd.DataFrame()
    heatmap = plot_heatmap(delta, out) if not delta.empty else None
    stopped = table[table["stopped_early"].astype(bool)] if "stopped_early" in table else table.iloc[:0]
    keep = [c for c in GRID + ["steps_run", "total_steps", "trial_wall_s"] + metrics[:2] if c in table]
    errors = table[failed][[c for c in GRID + ["error"] if c in table]]
    per_compute, totals = compute_table(table, run_dir)
    analysis_dir = run_dir / "analysis"
    analysis = pd.read_csv(analysis_dir / "summary.csv") if (analysis_dir / "summary.csv").is_file() else None
    analysis_imgs = sorted(analysis_dir.glob("misalignment_*.png")) if analysis is not None else []
    header = (f"{len(table)} trials; {len(stopped)} stopped early by the scheduler; {int(failed.sum())} failed. "
              f"Steps run: {int(totals.get('steps_run', 0))}; trial time: {totals.get('trial_wall_s', 0):.0f} s.")
    tables = {"summary": summary, "change_vs_none": delta.reset_index() if not delta.empty else delta,
              "early_stopped": stopped[keep], "failed": errors, "compute": per_compute,
              "compute_totals": pd.DataFrame([totals])}
    if analysis is not None:
        tables["misalignment"] = analysis

    md = ["# bias-ray sweep report", "", f"Run: `{run_dir}`", "", header, ""]
    md += [f"![{p.stem}]({p.name})" for p in plots + ([heatmap] if heatmap else [])]
    for name, df in tables.items():
        md += ["", f"## {name}", "", markdown_table(df.round(4)) if not df.empty else "none"]
    (out / "report.md").write_text("\n".join(md) + "\n")

    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}")
    if analysis is not None:
        mis = "".join(_img(p) for p in analysis_imgs) + _html_table(analysis, "misalignment")
    else:
        mis = "<p>No analysis yet: run <code>bias-ray analyze SPEC</code>.</p>"
    heat = _img(heatmap) + _html_table(tables["change_vs_none"], "change") if heatmap else \
        "<p>No heatmap: the sweep has no other mitigation next to <code>none</code>.</p>"
    trials = table.drop(columns=[c for c in ("trial_path",) if c in table])
    title = f"bias-ray report: {html.escape(run_dir.name)}"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head><body>
<h1>bias-ray sweep report</h1><p>{html.escape(header)}</p>
<section id="metric-vs-ratio"><h2>Metric vs bias ratio</h2>{"".join(_img(p) for p in plots)}</section>
<section id="heatmap"><h2>Mitigations: change vs none</h2>{heat}</section>
<section id="misalignment"><h2>Misalignment: augmented vs real data</h2>{mis}</section>
<section id="early-stopped"><h2>Early-stopped trials</h2>{_html_table(tables["early_stopped"], "stopped")}
<h3>Failed trials</h3>{_html_table(errors, "failed")}</section>
<section id="compute"><h2>Compute spent</h2>{_html_table(tables["compute_totals"], "totals")}
{_html_table(per_compute, "compute")}</section>
<section id="summary"><h2>Mean over seeds</h2>{_html_table(summary, "summary")}</section>
<section id="trials"><h2>All trials</h2>{_html_table(trials, "trials")}</section>
</body></html>"""
    (out / "report.html").write_text(page)
    if wandb != "disabled":
        log_to_wandb(run_dir, tables, plots + ([heatmap] if heatmap else []) + analysis_imgs, wandb, project)
    return out


def log_to_wandb(run_dir: Path, tables: dict[str, pd.DataFrame], images: list[Path], mode: str,
                 project: str) -> str:
    """The report's tables and figures as one W&B run (job_type ``report``); returns the run's folder."""
    import wandb

    from bias_ray.tracking import start_run

    run = start_run(mode, run_dir / "wandb", project, f"report-{run_dir.name}", "report")
    try:
        run.log({f"report/{k}": wandb.Table(dataframe=v.reset_index(drop=True).astype(
            {c: str for c in v.columns if v[c].dtype == object})) for k, v in tables.items() if not v.empty})
        run.log({f"figures/{p.stem}": wandb.Image(str(p)) for p in images})
        return str(run.dir)
    finally:
        run.finish()
