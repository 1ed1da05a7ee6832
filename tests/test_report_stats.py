"""The report's numbers by hand: t-intervals, paired differences, directions, colours, sentences, rank correlation."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from bias_ray.measures.metrics import METRIC_DIRECTIONS, metric_direction, shortfall
from bias_ray.report.figures import NEUTRAL, heatmap_colours
from bias_ray.report.headline import headline_metric, inheritance
from bias_ray.report.misalignment import finding, misalignment_vs_harm, rank_correlations
from bias_ray.report.stats import paired_differences, spearman, t_interval
from bias_ray.report.summary import findings

CALLED_AN_EFFECT = re.compile(r"(?<!called )an effect")  # "is an effect", not "not called an effect"
T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)
T_975_DF1 = 12.706204736174698


def test_t_interval_by_hand():
    iv = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1
    assert iv.mean == 2.0 and iv.n == 3
    assert iv.half_width == pytest.approx(T_975_DF2 / np.sqrt(3))
    assert (iv.low, iv.high) == pytest.approx((2 - T_975_DF2 / np.sqrt(3), 2 + T_975_DF2 / np.sqrt(3)))
    two = t_interval([0.5, 0.7, float("nan")])  # nan dropped: n=2, sd = 0.1*sqrt(2)
    assert two.n == 2 and two.half_width == pytest.approx(T_975_DF1 * 0.1 * np.sqrt(2) / np.sqrt(2))
    one = t_interval([0.4])
    assert one.n == 1 and not one.has_interval and not one.excludes_zero and one.text() == "0.400 (n=1)"


def _pairs(metric: str, base: list[float], other: list[float], ratio: float = 0.5) -> pd.DataFrame:
    rows = [{"bias_type": "a", "bias_ratio": ratio, "mitigation": "none", "seed": s, metric: v}
            for s, v in enumerate(base)]
    rows += [{"bias_type": "a", "bias_ratio": ratio, "mitigation": "m", "seed": s, metric: v}
             for s, v in enumerate(other)]
    return pd.DataFrame(rows)


def test_paired_difference_by_hand():
    # macro_f1 (higher is better): differences 0.10, 0.11, 0.12 -> mean 0.11, sd 0.01
    t = _pairs("macro_f1", [0.5, 0.6, 0.7], [0.60, 0.71, 0.82])
    t = pd.concat([t, pd.DataFrame([{"bias_type": "a", "bias_ratio": 0.5, "mitigation": "m", "seed": 9,
                                     "macro_f1": 0.0}])])  # no `none` on seed 9: not a pair, left out
    row = paired_differences(t, ["macro_f1"]).iloc[0]
    half = T_975_DF2 * 0.01 / np.sqrt(3)
    assert row["n"] == 3 and row["difference"] == pytest.approx(0.11)
    assert (row["diff_low"], row["diff_high"]) == pytest.approx((0.11 - half, 0.11 + half))
    assert row["improvement"] == pytest.approx(0.11) and row["verdict"] == "better"
    # the same differences on a false-positive-rate gap (closer to 0 is better) are worse
    gap = paired_differences(t.rename(columns={"macro_f1": "bias_type/fpr_gap"}), ["bias_type/fpr_gap"]).iloc[0]
    assert gap["difference"] == pytest.approx(0.11) and gap["improvement"] == pytest.approx(-0.11)
    assert gap["verdict"] == "worse"
    # noisy differences 0.06, -0.05, 0.02: the CI includes 0
    noisy = paired_differences(_pairs("macro_f1", [0.5, 0.5, 0.5], [0.56, 0.45, 0.52]), ["macro_f1"]).iloc[0]
    assert noisy["difference"] == pytest.approx(0.01) and noisy["verdict"] == "indistinguishable"
    assert noisy["diff_low"] < 0 < noisy["diff_high"]
    # a signed score where 0 is best: -0.2 -> +0.1 is a difference of +0.3 but an improvement of 0.1
    signed = _pairs("task/bbq/s_dis", [-0.2, -0.2], [0.1, 0.1])
    s = paired_differences(signed, ["task/bbq/s_dis"]).iloc[0]
    assert s["difference"] == pytest.approx(0.3) and s["improvement"] == pytest.approx(0.1)
    # one seed: no interval, never called an effect
    single = paired_differences(_pairs("macro_f1", [0.5], [0.9]), ["macro_f1"]).iloc[0]
    assert single["n"] == 1 and single["verdict"] == "no interval"


def test_metric_directions_come_from_one_place():
    assert metric_direction("macro_f1") == "higher" and metric_direction("bias_type/fpr_gap") == "zero"
    assert metric_direction("task/crows_pairs/stereo_pref") == "half"
    assert metric_direction("task/bbq/s_dis") == "zero" and metric_direction("task/story/toxicity_mean") == "lower"
    assert metric_direction("no_such_metric") is None and metric_direction("task/nope/x") is None
    listing = {"tasks": {"hatecheck": {"better": {"target_fpr": "lower"}}}}
    assert metric_direction("task/hatecheck/target_fpr", listing) == "lower"
    with pytest.raises(ValueError, match="allowed: higher, lower, zero, half"):
        metric_direction("task/t/m", {"tasks": {"t": {"better": {"m": "up"}}}})
    assert set(METRIC_DIRECTIONS.values()) <= {"higher", "lower", "zero", "half"}
    assert shortfall([0.7], "half").tolist() == pytest.approx([0.2])


def test_every_task_report_metric_declares_its_direction():
    from bias_ray.evaluate.tasks import task_listing

    for name, entry in task_listing()["tasks"].items():
        for m in entry.get("report_metrics", []):
            assert metric_direction(f"task/{name}/{m}") is not None, f"tasks.yaml: {name} lacks better: {{{m}: ...}}"


def test_heatmap_colours_a_wider_gap_as_worse():
    t = pd.concat([_pairs("bias_type/fpr_gap", [0.1, 0.1, 0.1], [0.3, 0.31, 0.29]),
                   _pairs("macro_f1", [0.5, 0.5, 0.5], [0.6, 0.61, 0.59]),
                   _pairs("mystery", [1.0, 1.0, 1.0], [2.0, 2.0, 2.0])])
    pooled = paired_differences(t, ["bias_type/fpr_gap", "macro_f1", "mystery"], over=["mitigation"])
    improvement = pooled.pivot(index="mitigation", columns="metric", values="improvement")
    colours = heatmap_colours(improvement[["bias_type/fpr_gap", "macro_f1", "mystery"]])
    gap, f1, mystery = colours[0, 0], colours[0, 1], colours[0, 2]
    # both went up; the wider gap is worse (red), the higher macro-F1 better (blue), the unknown one grey
    assert gap[0] > gap[2] + 0.2 and f1[2] > f1[0] + 0.2
    assert tuple(mystery) == NEUTRAL


def _sweep(effects: dict[str, list[float]], seeds=(0, 1, 2)) -> pd.DataFrame:
    """gender x ratios 0, 0.9; none inherits a wider gap; each mitigation's per-seed change at 0.9 is given."""
    none_low, none_high = [0.10, 0.12, 0.11], [0.30, 0.33, 0.31]
    rows = []
    for s in seeds:
        rows.append({"bias_type": "gender", "bias_ratio": 0.0, "mitigation": "none", "seed": s,
                     "bias_type/fpr_gap": none_low[s]})
        rows.append({"bias_type": "gender", "bias_ratio": 0.9, "mitigation": "none", "seed": s,
                     "bias_type/fpr_gap": none_high[s]})
        for mit, deltas in effects.items():
            rows.append({"bias_type": "gender", "bias_ratio": 0.0, "mitigation": mit, "seed": s,
                         "bias_type/fpr_gap": none_low[s]})
            rows.append({"bias_type": "gender", "bias_ratio": 0.9, "mitigation": mit, "seed": s,
                         "bias_type/fpr_gap": none_high[s] + deltas[s]})
    return pd.DataFrame(rows)


def test_summary_calls_an_effect_only_when_its_ci_excludes_zero():
    table = _sweep({"loss": [-0.10, -0.11, -0.09], "token": [0.06, -0.05, 0.02]})
    headline = headline_metric(table)
    assert headline == "bias_type/fpr_gap"
    text = findings(table, paired_differences(table, [headline]), headline)
    gender = next(s for s in text if s.startswith("`gender`"))
    # inherited: 0.11 -> 0.313, paired change +0.2033 (per-seed 0.20, 0.21, 0.20)
    assert "0.110 ± " in gender and "at ratio 0 and 0.313 ± " in gender
    assert "the change, +0.203 (95% CI [" in gender and "is an effect, worse" in gender
    half = T_975_DF2 * 0.01 / np.sqrt(3)
    assert (f"`loss` moves it by -0.100 (95% CI [{-0.1 - half:+.3f}, {-0.1 + half:+.3f}], n=3): an effect, better"
            in gender)
    token = gender[gender.index("`token` moves it"):].split(". ")[0]
    assert token.startswith("`token` moves it by +0.010 (95% CI [") and "indistinguishable from no effect" in token
    assert not CALLED_AN_EFFECT.search(token)
    assert "The largest improvement distinguishable from no effect is `loss`'s." in gender


def test_summary_with_one_seed_calls_nothing_an_effect():
    table = _sweep({"loss": [-0.10]}, seeds=(0,))
    text = " ".join(findings(table, paired_differences(table, ["bias_type/fpr_gap"]), "bias_type/fpr_gap"))
    assert "Only one seed ran" in text and not CALLED_AN_EFFECT.search(text)
    assert "No mitigation improves it distinguishably from no effect." in text


def test_misalignment_beside_harm_and_rank_correlation():
    rows = []
    for bt, harm in (("gender", 0.3), ("religion", 0.1), ("race", 0.2)):
        for s in (0, 1):
            rows += [{"bias_type": bt, "bias_ratio": 0.0, "mitigation": "none", "seed": s, "bias_type/fpr_gap": 0.1},
                     {"bias_type": bt, "bias_ratio": 0.5, "mitigation": "none", "seed": s,
                      "bias_type/fpr_gap": 0.1 + harm + 0.01 * s}]
    table = pd.DataFrame(rows)
    analysis = pd.DataFrame({"bias_type": ["gender", "religion", "race"], "value_gap": [0.5, 0.1, 0.3],
                             "group_js": [0.1, 0.3, 0.2], "mmd": [0.2, 0.2, 0.2]})
    frame = misalignment_vs_harm(analysis, inheritance(table, "bias_type/fpr_gap"))
    assert list(frame["bias_type"]) == ["gender", "race", "religion"]
    assert frame["harm"].tolist() == pytest.approx([0.305, 0.205, 0.105])  # wider gap = positive harm
    corr = rank_correlations(frame)
    assert corr["value_gap"] == pytest.approx((1.0, 3)) and corr["group_js"] == pytest.approx((-1.0, 3))
    assert np.isnan(corr["mmd"][0])  # constant: no rank correlation
    assert finding(frame, corr, analysed=True, enabled=True).endswith(
        "for `gender`, `race`, `religion`; Spearman rho with harm: `value_gap` +1.00, `group_js` -1.00 "
        "(n=3 bias types; a hint, not a test, at this n).")
    assert "not analysed (the spec sets `analysis.enabled: false`)" in finding(frame, corr, False, enabled=False)
    one_seed = misalignment_vs_harm(analysis, inheritance(table[table["seed"] == 0], "bias_type/fpr_gap"))
    assert "one seed gives the harm no interval, so none is called inherited" in finding(one_seed, {}, True, True)


def test_spearman_by_hand():
    # ranks differ by 0, 1, 1, 0: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx((0.8, 4))
    assert np.isnan(spearman([1, 2], [2, 1])[0])
