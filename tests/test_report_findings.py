"""The findings table that opens the report and the headline figure on the group-specific metric, on made-up tables."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import bias_ray.report.figures as figures
from bias_ray.report import build_report, final_lines
from bias_ray.report.build import HEADLINE_FIGURE
from bias_ray.report.findings_table import (
    NONE_DISTINGUISHABLE,
    findings_table,
    group_header,
    mitigation_header,
)
from bias_ray.report.headline import group_metric, headline_figure_metric

TARGET, OTHER, EXCESS = "task/hatecheck/target_fpr", "task/hatecheck/other_fpr", "task/hatecheck/target_excess_fpr"
CONTROL_COL, UTILITY_COL = f"control change: {OTHER}", "utility change: macro_f1"
RATIOS = (0.0, 0.5, 0.9)
RISE = {"gender": 0.3, "religion": 0.0}  # planted: gender's targeted groups inherit excess false alarms, religion's not
# what each mitigation leaves of the inherited excess rise; token only shifts every ratio alike (calibration);
# overshoot pushes the excess past 0 to further from it than none: the most negative DiD, but not favourable
KEEPS = {"none": 1.0, "token": 1.0, "loss": 0.1, "overshoot": -1.5}
CI = re.compile(r"^([+-]\d\.\d{3}) \(95% CI \[([+-]\d\.\d{3}), ([+-]\d\.\d{3})\], n=3\)")


def _sweep(seeds: int = 3) -> pd.DataFrame:
    """2 bias types x 3 ratios x 4 mitigations x 3 seeds; every group's FPR rises with the ratio (label shift)."""
    rng = np.random.default_rng(0)
    rows = []
    for bt in RISE:
        for ratio in RATIOS:
            for mit, keeps in KEEPS.items():
                for seed in range(seeds):
                    other = 0.3 + 0.2 * ratio + rng.normal(0, 0.005)
                    excess = (0.02 + keeps * RISE[bt] * ratio + (0.03 if mit == "token" else 0.0)
                              + rng.normal(0, 0.005))
                    rows.append({"bias_type": bt, "bias_ratio": ratio, "mitigation": mit, "seed": seed,
                                 OTHER: other, EXCESS: excess, TARGET: other + excess,
                                 "macro_f1": 0.7 - 0.1 * ratio + rng.normal(0, 0.005)})
    return pd.DataFrame(rows)


def _ci(cell: str) -> tuple[float, float, float]:
    """(mean, low, high) of a ``+0.270 (95% CI [+0.251, +0.289], n=3) ...`` cell."""
    match = CI.match(cell)
    assert match, cell
    return tuple(float(x) for x in match.groups())


def test_findings_table_rows_on_a_planted_effect():
    table = _sweep()
    assert group_metric(table) == EXCESS and headline_figure_metric(table) == EXCESS
    frame = findings_table(table, EXCESS).set_index("bias type")
    assert list(frame.index) == ["gender", "religion"]  # one row per bias type
    group, mitigation = group_header(EXCESS), mitigation_header(EXCESS)
    assert EXCESS in group and EXCESS in mitigation
    assert list(frame.columns) == ["ratios", group, CONTROL_COL, UTILITY_COL, mitigation]
    gender, religion = frame.loc["gender"], frame.loc["religion"]
    assert gender["ratios"] == "0 to 0.9"
    # gender inherits group-specific false alarms: +0.27, CI above 0; religion's CI includes 0
    mean, low, high = _ci(gender[group])
    assert mean == pytest.approx(0.27, abs=0.02) and low > 0 and gender[group].endswith(" worse")
    mean, low, high = _ci(religion[group])
    assert low < 0 < high and religion[group].endswith(" indistinguishable")
    # the control rises for both (the label shift), macro-F1 falls for both
    for row in (gender, religion):
        mean, low, high = _ci(row[CONTROL_COL])
        assert mean == pytest.approx(0.18, abs=0.02) and low > 0
        mean, low, high = _ci(row[UTILITY_COL])
        assert mean == pytest.approx(-0.09, abs=0.02) and high < 0 and row[UTILITY_COL].endswith(" worse")
    # loss takes most of gender's excess back: named with its DiD (-0.9 * 0.27), CI below 0. overshoot's DiD is
    # more negative but ends further from 0 (closer to 0 is better), and token only shifts calibration
    assert gender[mitigation].startswith("loss: DiD ")
    mean, low, high = _ci(gender[mitigation].removeprefix("loss: DiD "))
    assert mean == pytest.approx(-0.243, abs=0.02) and high < 0
    assert religion[mitigation] == NONE_DISTINGUISHABLE


def test_findings_table_names_none_when_no_ci_excludes_0_and_says_why_there_is_no_did():
    table = _sweep()
    gender = table[(table["bias_type"] == "gender") & table["mitigation"].isin(["none", "token"])]
    frame = findings_table(gender, EXCESS)
    assert frame[mitigation_header(EXCESS)].tolist() == [NONE_DISTINGUISHABLE]  # token: a shift, no DiD
    only_none = findings_table(gender[gender["mitigation"] == "none"], EXCESS)
    assert only_none[mitigation_header(EXCESS)].tolist() == ["n/a (no mitigation besides none at ratio 0.9)"]
    no_zero = findings_table(table[table["bias_ratio"] > 0], EXCESS).set_index("bias type")
    assert no_zero.loc["gender", "ratios"] == "0.5 to 0.9"
    assert no_zero.loc["gender", mitigation_header(EXCESS)].startswith("n/a (no ratio 0")
    assert findings_table(table[table["bias_ratio"] == 0.9], EXCESS).empty  # one ratio: nothing inherited


def test_findings_table_falls_back_to_the_headline_on_older_results():
    older = _sweep().drop(columns=[EXCESS, OTHER])
    assert group_metric(older) == TARGET and headline_figure_metric(older) == TARGET
    frame = findings_table(older, TARGET)
    assert group_header(TARGET) in frame and "no task/hatecheck/target_excess_fpr" in group_header(TARGET)
    assert CONTROL_COL not in frame and UTILITY_COL in frame  # no control column without the control's values
    assert frame["bias type"].tolist() == ["gender", "religion"]
    assert all(_ci(c)[1] > 0 for c in frame[group_header(TARGET)])  # target_fpr rises for both: the label shift
    nan_excess = _sweep().assign(**{EXCESS: np.nan})  # a column with no value is no data
    assert group_metric(nan_excess) == TARGET and headline_figure_metric(nan_excess) == TARGET


@pytest.fixture
def plotted(monkeypatch) -> list[tuple[str, str | None]]:
    """(metric, filename) of every figure the report plots."""
    calls: list[tuple[str, str | None]] = []
    plot = figures.plot_metric_vs_ratio

    def spy(table, metric, out, title=None, filename=None):
        calls.append((metric, filename))
        return plot(table, metric, out, title=title, filename=filename)

    monkeypatch.setattr(figures, "plot_metric_vs_ratio", spy)
    return calls


def _report(tmp_path, table: pd.DataFrame) -> tuple[str, str]:
    run = tmp_path / "run"
    run.mkdir()
    table.to_parquet(run / "results.parquet")
    out = build_report(run)
    return (out / "report.md").read_text(), (out / "report.html").read_text()


def test_report_opens_with_the_findings_table_and_plots_the_excess_as_headline(tmp_path, plotted):
    md, page = _report(tmp_path, _sweep())
    header = (f"| bias type | ratios | {group_header(EXCESS)} | {CONTROL_COL} | {UTILITY_COL} | "
              f"{mitigation_header(EXCESS)} |")
    assert header in md
    summary = md.index("## Summary")
    assert summary < md.index(header) < md.index("- Grid:") < md.index("Headline fairness metric") < md.index(
        "## Headline")
    assert re.search(r"\| gender \| 0 to 0\.9 \| \+0\.2\d\d \(95% CI \[\+0\.\d{3}, \+0\.\d{3}\], n=3\) worse \|", md)
    assert re.search(r"\| religion \| .* \| none distinguishable \|$", md, re.M)
    assert "loss: DiD -0.2" in md
    assert re.search(r'<table[^>]*class="[^"]*\bfindings\b', page)
    assert page.index('id="summary"') < page.index('class="dataframe findings"') < page.index("<li>Grid:")
    # the headline figure is the group-specific part; target_fpr keeps its plot among the metric-vs-ratio ones
    assert (EXCESS, HEADLINE_FIGURE) in plotted and (TARGET, None) in plotted
    assert [m for m, _ in plotted].count(EXCESS) == 1
    assert final_lines(tmp_path / "run" / "report")[1].endswith(HEADLINE_FIGURE)
    assert f"`{EXCESS}`: HateCheck false-positive rate on non-hateful cases that target" in md  # its table too


def test_report_on_older_results_without_the_excess_column(tmp_path, plotted):
    md, page = _report(tmp_path, _sweep().drop(columns=[EXCESS, OTHER]))
    assert f"| bias type | ratios | {group_header(TARGET)} | {UTILITY_COL} |" in md
    assert md.index(group_header(TARGET)) < md.index("- Grid:")
    assert f"the results have no `{EXCESS}`, so this is the headline metric" in md
    assert (TARGET, HEADLINE_FIGURE) in plotted and (TARGET, None) not in plotted  # the headline figure, as before
    assert (tmp_path / "run" / "report" / HEADLINE_FIGURE).is_file()
