"""The report on a synthetic results table: sections, self-containment, headless Chromium, W&B offline."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from bias_ray.report import build_report


def _results(run_dir) -> pd.DataFrame:
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
                        "trial_wall_s": 30.0, "trial_path": str(run_dir / "tune" / "x"),
                    })
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


def test_report_sections_are_self_contained(run_dir):
    out = build_report(run_dir)
    page = (out / "report.html").read_text()
    for section in ("metric-vs-ratio", "heatmap", "misalignment", "early-stopped", "compute", "trials"):
        assert f'id="{section}"' in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)  # nothing to fetch
    assert "http://" not in page and "https://" not in page
    assert (out / "task_bbq_s_dis_vs_bias_ratio.png").is_file() and (out / "mitigation_heatmap.png").is_file()
    assert "out of memory" in page and "report.md" in {p.name for p in out.iterdir()}


def test_report_rejects_missing_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="bias-ray sweep"):
        build_report(tmp_path)


@pytest.mark.timeout(180)
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    out = build_report(run_dir)
    url = (out / "report.html").resolve().as_uri()
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    n_plots = 4 + 3 + 1  # default metrics, task report metrics, heatmap
    imgs = re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom)
    assert len(imgs) >= n_plots + 1  # + the misalignment figure
    for cls in ("summary", "trials", "stopped", "compute", "misalignment", "change"):
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
    assert {"summary", "change_vs_none", "early_stopped", "compute", "compute_totals", "misalignment"} <= logged


def test_report_without_analysis_or_baseline_says_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    table = _results(run)
    table[table["mitigation"] == "token"].to_parquet(run / "results.parquet")
    page = (build_report(run) / "report.html").read_text()
    assert "bias-ray analyze SPEC" in page and "no other mitigation next to <code>none</code>" in page
    assert not (run / "report" / "mitigation_heatmap.png").exists()
