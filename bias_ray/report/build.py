"""Build the sweep report under ``<run_dir>/report``: Markdown, PNG plots and one self-contained HTML page.

The page opens with a findings table (one row per bias type: the inherited group-specific change,
its control, the utility change, the mitigation that reduces it most; ``findings_table``), then a
summary (what ran, what it found, in sentences built from the numbers), then the headline figure
(HateCheck's group-specific false-positive rate, target - control, against bias ratio; the
targeted-group rate itself on results from before that column), which mitigation wins (the
difference-in-differences against ``none`` and ratio 0, and the plain paired differences against
``none``, with 95% CIs), every metric against bias ratio with 95% CIs over seeds, a better/worse
heatmap, misalignment next to harm, what the generator wrote, early-stopped and failed trials, and
the compute spent. Figures are inlined as data URIs, so the HTML opens offline from anywhere. The
pieces live in their own modules: statistics (``stats``), which metrics and the headline and
inheritance (``headline``), the findings table (``findings_table``), sentences (``summary``),
figures (``figures``), tables (``tables``), misalignment vs harm (``misalignment``), the run
folder's files (``run_files``) and the Markdown/HTML writer (``page``).
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

import bias_ray.report.figures as figures
import bias_ray.report.findings_table as findings_table
import bias_ray.report.misalignment as misalignment
import bias_ray.report.run_files as run_files
import bias_ray.report.summary as summary
import bias_ray.report.tables as tables
from bias_ray.files import write_text
from bias_ray.report.headline import (
    ACCURACY_GAP_METRIC,
    DESCRIPTIONS,
    HEADLINE_FIGURE_FILE,
    HEADLINE_FIGURE_METRIC,
    HEADLINE_TASK,
    HEADLINE_TITLES,
    UTILITY_METRIC,
    every_metric,
    group_metric,
    headline_figure_metric,
    headline_metric,
    inheritance,
    report_metrics,
)
from bias_ray.report.page import Page
from bias_ray.report.stats import difference_in_differences, format_mean_ci, mean_ci_table, paired_differences
from bias_ray.spec.layout import RunLayout

HEADLINE_FIGURE = HEADLINE_FIGURE_FILE  # headline_figure_metric(): the headline task's rank, group, else its metric
HEADLINE_GAP_FIGURE = "headline_accuracy_gap.png"  # a task of named classes (Bias in Bios): no HateCheck
FIGURE_TITLES = {**HEADLINE_TITLES,
                 ACCURACY_GAP_METRIC: "Largest gap in accuracy between the bias type's groups (held-out task data)"}
HATECHECK_MISSING = (f"No headline figure: the results have no `{HEADLINE_FIGURE_METRIC}` column. Add "
                     f"`{HEADLINE_TASK}` to the spec's evaluation.tasks to measure the "
                     f"{DESCRIPTIONS[HEADLINE_FIGURE_METRIC].replace('the bias type', 'each bias type')}.")
CLIP_NOTE = ("Where a 95% interval reaches past the metric's range (e.g. below 0 or above 1 for a rate, over few "
             "seeds), its ends are cut at the range: error bars stop there, tables print `mean [low, high] clipped` "
             "instead of ±, and the figure says so; the mean is unchanged.")
SECTIONS = [("summary", "Summary"), ("headline", "Headline"), ("wins", "Which mitigation wins"),
            ("metric-vs-ratio", "Metric vs bias ratio"), ("heatmap", "Mitigations: better or worse than none"),
            ("misalignment", "Misalignment next to harm"), ("generator", "What the generator wrote"),
            ("early-stopped", "Early-stopped and failed trials"), ("compute", "Compute spent"),
            ("mean-ci", "Mean ± 95% CI over seeds"), ("trials", "All trials")]


def final_lines(out: Path) -> list[str]:
    """What the CLI prints last: where the report and the headline figure are (or why there is none)."""
    figure = next((out / f for f in (HEADLINE_FIGURE, HEADLINE_GAP_FIGURE) if (out / f).is_file()), None)
    return [f"report: {out / 'report.html'}",
            f"headline figure: {figure}" if figure else HATECHECK_MISSING.replace("`", "")]


def build_report(run_dir: str | Path, metrics: list[str] | None = None, wandb: str = "disabled",
                 project: str = "bias-ray") -> Path:
    """Write ``report.md``, ``report.html`` and PNG plots under ``run_dir/report``; log tables to W&B if asked."""
    run_dir = Path(run_dir)
    table = run_files.load_results(run_dir)
    out = RunLayout(run_dir).report_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / HEADLINE_FIGURE).unlink(missing_ok=True)  # a figure of an earlier build must not outlive its column
    failed = table["error"].notna() if "error" in table else pd.Series(False, index=table.index)
    ok = table[~failed]
    metrics = report_metrics(table, metrics)
    spec, manifest = run_files.read_spec(run_dir), run_files.read_manifest(run_dir)
    analysis = run_files.read_analysis(run_dir)
    stopped = table[table["stopped_early"].astype(bool)] if "stopped_early" in table else table.iloc[:0]
    per_compute, totals = tables.compute_table(table, manifest, analysis.info)
    headline = headline_metric(ok)
    paired = paired_differences(ok, metrics) if len(ok) and metrics else pd.DataFrame()
    did = difference_in_differences(ok, metrics) if len(ok) and metrics else pd.DataFrame()
    pooled = paired_differences(ok, metrics, over=["mitigation"]) if len(ok) and metrics else pd.DataFrame()
    every = list(dict.fromkeys(metrics + every_metric(ok)))
    means = mean_ci_table(ok, every) if len(ok) else pd.DataFrame()
    mis_frame = (misalignment.misalignment_vs_harm(analysis.summary, inheritance(ok, headline))
                 if analysis.summary is not None and headline else pd.DataFrame())
    correlations = misalignment.rank_correlations(mis_frame) if not mis_frame.empty else {}

    page = Page()
    page.section("summary", "Summary")
    findings = _findings(page, ok)
    page.bullets(summary.what_ran(table, spec, manifest, totals, int(failed.sum()), len(stopped)))
    page.heading("Findings")
    page.bullets((summary.findings(ok, paired, headline, did) if len(ok)
                  else ["Every trial failed; nothing to summarise."])
                 + [misalignment.finding(mis_frame, correlations, analysis.summary is not None,
                                         run_files.analysis_enabled(spec))])
    page.links(SECTIONS[1:])

    page.section("headline", "Headline")
    figure_paths: list[Path] = []
    figure_metric = headline_figure_metric(ok) if len(ok) else None
    if figure_metric:
        filename = HEADLINE_GAP_FIGURE if figure_metric == ACCURACY_GAP_METRIC else HEADLINE_FIGURE
        figure_paths.append(figures.plot_metric_vs_ratio(ok, figure_metric, out, filename=filename,
                                                         title=FIGURE_TITLES[figure_metric]))
        page.image(figure_paths[-1])
    else:
        page.text(HATECHECK_MISSING)
    for m in dict.fromkeys([figure_metric, headline, UTILITY_METRIC]):
        if m and m in ok:
            page.heading(f"`{m}`: {DESCRIPTIONS.get(m, m)}, mean ± 95% CI over seeds")
            page.table(tables.intervals_by_ratio(ok, m), "headline")

    page.section("wins", "Which mitigation wins")
    _wins(page, paired, did)

    page.section("metric-vs-ratio", "Metric vs bias ratio")
    page.text(f"Mean over seeds per mitigation; {figures.seeds_note(ok if len(ok) else table)}. {CLIP_NOTE}")
    plots = [figures.plot_metric_vs_ratio(ok, m, out) for m in metrics
             if m != figure_metric] if len(ok) else []  # the headline is above
    for p in plots:
        page.image(p)

    page.section("heatmap", "Mitigations: better or worse than none")
    heatmap = figures.plot_heatmap(pooled, out) if not pooled.empty else None
    if heatmap:
        page.image(heatmap)
        page.table(pooled.round(4), "change")
    else:
        page.text("No heatmap: the sweep has no other mitigation next to `none`.")

    page.section("misalignment", "Misalignment next to harm")
    mis_plot = _misalignment(page, mis_frame, correlations, headline, analysis, spec, out)

    page.section("generator", "What the generator wrote")
    measures = run_files.generator_measures(manifest)
    if measures is None:
        page.text("The generation manifest has no `generator_measures` (share of kept rows naming the prompted "
                  "group, and the stance classifier's hate share, per group and stance); this run's generation "
                  "predates them or did not measure them.")
    else:
        if manifest and manifest.get("imported"):
            page.text("The augmented data was imported (`bias-ray import`), not generated: these are the same "
                      "measures on the imported rows; `stance` is `unknown` where the rows did not say.")
        page.table(measures, "generator")

    page.section("early-stopped", "Early-stopped and failed trials")
    keep = [c for c in run_files.GRID + ["steps_run", "total_steps", "trial_wall_s"] + metrics[:2] if c in table]
    errors = table[failed][[c for c in run_files.GRID + ["error"] if c in table]]
    page.table(stopped[keep], "stopped")
    page.heading("Failed trials")
    page.table(errors, "failed")

    page.section("compute", "Compute spent")
    page.table(pd.DataFrame([totals]), "totals")
    page.table(per_compute, "compute")

    page.section("mean-ci", "Mean ± 95% CI over seeds")
    page.text("Every metric: mean ± half-width of the 95% t-interval over seeds; a cell with one seed shows its "
              f"value and n=1 (no interval). {CLIP_NOTE}")
    page.table(format_mean_ci(means, every) if not means.empty else means, "summary")

    page.section("trials", "All trials")
    page.table(table.drop(columns=[c for c in ("trial_path",) if c in table]), "trials")
    page.close()

    title = f"bias-ray report: {html.escape(run_dir.name)}"
    write_text(out / "report.md", "\n".join(["# bias-ray sweep report", "", f"Run: `{run_dir}`"] + page.md) + "\n")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}li{margin:.3em 0}")
    write_text(
        out / "report.html",
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>{style}</style></head>'
        f"<body><h1>bias-ray sweep report</h1><p>Run: <code>{html.escape(str(run_dir))}</code></p>"
        + "\n".join(page.html) + "</body></html>")
    if wandb != "disabled":
        logged = {"findings": findings, "summary": means, "change_vs_none": pooled, "mitigation_wins": paired,
                  "mitigation_wins_did": did, "early_stopped": stopped[keep], "failed": errors, "compute": per_compute,
                  "compute_totals": pd.DataFrame([totals]), "misalignment_vs_harm": mis_frame}
        if analysis.summary is not None:
            logged["misalignment"] = analysis.summary
        if measures is not None:
            logged["generator_measures"] = measures
        images = figure_paths + plots + [p for p in (heatmap, mis_plot) if p] + analysis.images
        log_to_wandb(run_dir, logged, images, wandb, project)
    return out


def _findings(page: Page, ok: pd.DataFrame) -> pd.DataFrame:
    """The findings table first, so the report opens with its numbers; its legend under it. Returns the table."""
    metric = group_metric(ok) if len(ok) else None
    if metric is None:  # the sentences below say there is no fairness metric
        return pd.DataFrame()
    frame = findings_table.findings_table(ok, metric)
    if frame.empty:
        page.text(f"No findings table: the sweep has no `none` trials at two or more ratios with `{metric}`.")
        return frame
    page.table(frame, "findings")
    page.text(findings_table.findings_note(metric))
    return frame


def _wins(page: Page, paired: pd.DataFrame, did: pd.DataFrame) -> None:
    """The wins section: the difference-in-differences against ratio 0 (when the grid has it), then the plain one."""
    if paired.empty:
        page.text("No comparison: the sweep has no other mitigation next to `none`.")
        return
    legend = ("better or worse by the metric's declared direction, where the 95% CI over seeds excludes 0 (marked "
              "*); indistinguishable = indistinguishable from no effect (the CI includes 0); with one seed there is "
              "no interval; `clipped` = the CI was cut at the largest difference the metric's range allows.")
    if did.empty:
        page.text("The grid has no ratio 0, so there is no difference-in-differences: the table below is the plain "
                  "difference against `none`, which also holds any shift a mitigation causes without augmented data.")
    else:
        page.heading("Net of ratio 0: difference-in-differences")
        page.text("Each cell: DiD(m, r) = [metric(m, r) - metric(none, r)] - [metric(m, 0) - metric(none, 0)], per "
                  "seed (the same seed in all four cells), mean over seeds [95% CI]: how much the mitigation changes "
                  "what augmented data does to the metric (its change from ratio 0), so a shift it causes with no "
                  "augmented data (a calibration change) does not count. Only seeds with all four cells are paired; "
                  "`n=2 of 3 seeds` says when some were left out. For a lower-is-better metric a negative DiD is "
                  f"better. {legend}")
        for bt, frame in tables.wins_tables(did).items():
            page.heading(f"bias type `{bt}`: difference-in-differences against ratio 0")
            page.table(frame, "wins did")
        page.heading("Plain difference against `none` at each ratio")
    page.text("Each cell: the mitigation minus `none` on the same bias type, ratio and seed, mean over seeds [95% CI]; "
              f"at ratio 0 it is the shift the mitigation causes without augmented data. {legend}")
    for bt, frame in tables.wins_tables(paired).items():
        page.heading(f"bias type `{bt}`")
        page.table(frame, "wins")


def _misalignment(page: Page, frame: pd.DataFrame, correlations: dict, headline: str | None,
                  analysis: run_files.Analysis, spec: dict | None, out: Path) -> Path | None:
    """The misalignment section: measures beside harm, rank correlations, then the analysis' own tables."""
    if analysis.summary is None:
        if not run_files.analysis_enabled(spec):
            page.text("The misalignment analysis is off in this run's spec (`analysis.enabled: false`); set it to "
                      "true, or run `bias-ray analyze SPEC`, to see it here.")
        else:
            page.text("No analysis yet: run `bias-ray analyze SPEC` (`bias-ray run` runs it unless the spec "
                      "sets `analysis.enabled: false`).")
        return None
    plot = None
    page.heading("Misalignment measures beside the harm each bias type inherited")
    if frame.empty:
        page.text("No harm to set beside the measures: the sweep needs `none` trials at two or more ratios and "
                  "a fairness metric.")
    else:
        page.text(f"harm = change of `{headline}` from the lowest to the highest ratio under `none`, paired by seed, "
                  "signed so that positive = worse (95% CI over seeds); change = the same in the metric's units. "
                  f"Measures: {'; '.join(f'`{k}` ({v})' for k, v in misalignment.MEASURES.items())}.")
        page.table(frame.round(4), "misalignment-harm")
        if len(frame) >= misalignment.MIN_BIAS_TYPES_FOR_CORRELATION:
            plot = figures.plot_misalignment_vs_harm(frame, misalignment.MEASURES, correlations,
                                                     f"harm: change of {headline}\n(positive = worse)", out)
            page.image(plot)
        else:
            page.text(f"With {len(frame)} bias type(s) there is no plot or rank correlation: they need "
                      f"{misalignment.MIN_BIAS_TYPES_FOR_CORRELATION} or more.")
        page.bullets(misalignment.correlation_sentences(correlations))
    page.heading("The analysis: augmented vs real data")
    for p in analysis.images:
        page.image(p)
    page.table(analysis.summary, "misalignment")
    if analysis.probes is not None:
        page.heading("Group data from neutral prompts")
        page.text("The share of each group among the texts the generator wrote from a prompt that names no group "
                  "(`analysis.probe_prompt`), per occupation, over the texts whose identity words, pronouns or names "
                  "point to one group (`assigned` of `texts`); `probe_tv` in the table above is the mean distance of "
                  "these shares from parity (0 = parity, bias_ray/analysis/probes.py).")
        wide = analysis.probes.pivot(index=["dimension", "slot", "texts", "assigned"], columns="group",
                                     values="share").reset_index()
        page.table(wide.round(3), "group-probes")
    return plot


def log_to_wandb(run_dir: Path, tables: dict[str, pd.DataFrame], images: list[Path], mode: str,
                 project: str) -> str:
    """The report's tables and figures as one W&B run (job_type ``report``); returns the run's folder."""
    import wandb

    from bias_ray.tracking import start_run

    run = start_run(mode, RunLayout(run_dir).wandb_dir, project, f"report-{run_dir.name}", "report")
    try:
        run.log({f"report/{k}": wandb.Table(dataframe=v.reset_index(drop=True).astype(
            {c: str for c in v.columns if v[c].dtype == object})) for k, v in tables.items() if not v.empty})
        run.log({f"figures/{p.stem}": wandb.Image(str(p)) for p in images})
        return str(run.dir)
    finally:
        run.finish()
