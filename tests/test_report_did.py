"""Difference-in-differences against ratio 0, and intervals cut at a metric's range, on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bias_ray.measures.metrics import metric_bounds
from bias_ray.report.figures import error_bars
from bias_ray.report.headline import inheritance
from bias_ray.report.stats import (
    Interval,
    difference_bounds,
    difference_in_differences,
    format_mean_ci,
    mean_ci_table,
    paired_differences,
    t_interval,
)
from bias_ray.report.summary import NO_REFERENCE, findings
from bias_ray.report.tables import intervals_by_ratio, wins_tables

FPR = "task/hatecheck/target_fpr"  # lower is better, in [0, 1]
T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)
# Dyadic values, exact in binary floating point: a constant shift cancels to exactly 0.
NONE = {0.0: [0.25, 0.375, 0.5], 0.5: [0.5, 0.625, 0.75]}
SHIFT = [-0.125, -0.109375, -0.140625]  # token's calibration shift per seed, the same at every ratio
RELIEF = [-0.1, -0.12, -0.11]  # what loss takes off the inherited rise at ratio 0.5 (beyond its own shift)


def _calibration_sweep(metric: str = FPR) -> pd.DataFrame:
    """none inherits +0.25 at ratio 0.5; token only shifts every cell by SHIFT; loss shifts and removes RELIEF."""
    rows = []
    for s in range(3):
        for r, values in NONE.items():
            rows.append({"bias_type": "gender", "mitigation": "none", "bias_ratio": r, "seed": s, metric: values[s]})
            rows.append({"bias_type": "gender", "mitigation": "token", "bias_ratio": r, "seed": s,
                         metric: values[s] + SHIFT[s]})
            rows.append({"bias_type": "gender", "mitigation": "loss", "bias_ratio": r, "seed": s,
                         metric: values[s] + SHIFT[s] + (RELIEF[s] if r else 0.0)})
    return pd.DataFrame(rows)


def _row(frame: pd.DataFrame, mitigation: str, ratio: float = 0.5):
    return frame[(frame["mitigation"] == mitigation) & (frame["bias_ratio"] == ratio)].iloc[0]


def test_a_constant_calibration_shift_is_a_plain_difference_but_no_did():
    table = _calibration_sweep()
    plain, did = paired_differences(table, [FPR]), difference_in_differences(table, [FPR])
    shift_half = T_975_DF2 * np.std(SHIFT, ddof=1) / np.sqrt(3)
    token_plain = _row(plain, "token")
    assert token_plain["difference"] == pytest.approx(-0.125) and token_plain["verdict"] == "better"
    assert (token_plain["diff_low"], token_plain["diff_high"]) == pytest.approx((-0.125 - shift_half,
                                                                                -0.125 + shift_half))
    token = _row(did, "token")
    assert token["difference"] == 0.0 and token["diff_low"] == 0.0 == token["diff_high"]
    assert token["verdict"] == "indistinguishable" and token["n"] == 3 and token["n_incomplete"] == 0
    # loss: plain -0.125 + -0.11; DiD only its relief, -0.11 ± t * 0.01 / sqrt(3); lower is better -> better
    loss, half = _row(did, "loss"), T_975_DF2 * 0.01 / np.sqrt(3)
    assert _row(plain, "loss")["difference"] == pytest.approx(-0.235)
    assert loss["difference"] == pytest.approx(-0.11)
    assert (loss["diff_low"], loss["diff_high"]) == pytest.approx((-0.11 - half, -0.11 + half))
    assert loss["improvement"] == pytest.approx(0.11) and loss["verdict"] == "better"
    assert set(did["bias_ratio"]) == {0.5} and set(did["reference_ratio"]) == {0.0}  # no DiD at ratio 0 itself


def test_did_is_direction_aware():
    # macro-F1 (higher is better): loss's relief taken with the other sign is a smaller drop: positive DiD, better
    table = _calibration_sweep("macro_f1")
    table.loc[table["mitigation"] == "loss", "macro_f1"] = (
        table["macro_f1"] - 2 * np.where(table["bias_ratio"] > 0, [RELIEF[s] for s in table["seed"]], 0.0))
    loss = _row(difference_in_differences(table, ["macro_f1"]), "loss")
    assert loss["difference"] == pytest.approx(0.11) and loss["improvement"] == pytest.approx(0.11)
    assert loss["verdict"] == "better"
    # the same numbers on a gap where 0 is best: growing the gap is worse
    gap = _row(difference_in_differences(table.rename(columns={"macro_f1": "bias_type/fpr_gap"}),
                                         ["bias_type/fpr_gap"]), "loss")
    assert gap["difference"] == pytest.approx(0.11) and gap["improvement"] == pytest.approx(-0.11)
    assert gap["verdict"] == "worse"


def test_did_pairs_only_seeds_with_all_four_cells():
    table = _calibration_sweep()
    drop = (table["mitigation"] == "loss") & (table["bias_ratio"] == 0.0) & (table["seed"] == 2)
    table = table[~drop]
    table.loc[(table["mitigation"] == "token") & (table["seed"] == 1) & (table["bias_ratio"] == 0.5), FPR] = np.nan
    extra = pd.DataFrame([{"bias_type": "gender", "mitigation": "none", "bias_ratio": r, "seed": 7, FPR: 0.5}
                          for r in (0.0, 0.5)])  # a seed only `none` ran: never paired, counted as left out
    did = difference_in_differences(pd.concat([table, extra], ignore_index=True), [FPR])
    loss, token = _row(did, "loss"), _row(did, "token")
    assert loss["n"] == 2 and loss["n_incomplete"] == 2
    assert loss["difference"] == pytest.approx(np.mean(RELIEF[:2]))
    assert token["n"] == 2 and token["n_incomplete"] == 2  # seed 1's nan is no value
    cell = wins_tables(did)["gender"].set_index("mitigation").loc["loss", "ratio 0.5"]
    assert cell.endswith("(n=2 of 4 seeds)") and cell.startswith("-0.110 [")
    one = difference_in_differences(table[table["seed"] != 1], [FPR])  # loss: only seed 0 has all four cells
    assert (wins_tables(one)["gender"].set_index("mitigation").loc["loss", "ratio 0.5"]
            == "-0.100 (n=1 of 2 seeds, no interval)")
    # a mitigation that never ran at ratio 0: a row with no pair, and the table says why
    no_reference = difference_in_differences(table[~((table["mitigation"] == "loss") & (table["bias_ratio"] == 0))],
                                             [FPR])
    assert _row(no_reference, "loss")["n"] == 0
    assert (wins_tables(no_reference)["gender"].set_index("mitigation").loc["loss", "ratio 0.5"]
            == "n/a (3 seed(s), none with all four cells)")


def test_did_needs_ratio_0_and_one_trial_per_cell():
    table = _calibration_sweep()
    assert difference_in_differences(table[table["bias_ratio"] > 0], [FPR]).empty
    assert difference_in_differences(table[table["mitigation"] != "none"], [FPR]).empty
    with pytest.raises(ValueError, match="keep one trial per cell and seed"):
        difference_in_differences(pd.concat([table, table.iloc[:1]]), [FPR])


def test_summary_says_which_mitigation_wins_by_the_did_and_falls_back_without_ratio_0():
    table = _calibration_sweep()
    plain, did = paired_differences(table, [FPR]), difference_in_differences(table, [FPR])
    naive = next(s for s in findings(table, plain, FPR) if s.startswith("`gender`"))
    assert "`token` moves it by -0.125" in naive and "an effect, better" in naive.split("`token`")[1].split(";")[0]
    text = next(s for s in findings(table, plain, FPR, did) if s.startswith("`gender`"))
    assert "net of ratio 0 (difference-in-differences" in text
    token = text[text.index("`token` alters"):].split(";")[0]
    assert token.startswith("`token` alters the change from ratio 0 to 0.5 by +0.000 (95% CI [+0.000, +0.000], n=3)")
    assert "indistinguishable from no effect" in token
    assert "`loss` alters the change from ratio 0 to 0.5 by -0.110 (95% CI [" in text
    assert text.endswith("The largest improvement distinguishable from no effect is `loss`'s.")
    # no ratio 0 in the grid: the plain difference, and the summary says so
    high = table[table["bias_ratio"] > 0].copy()
    low = table[table["bias_ratio"] == 0].assign(bias_ratio=0.25)
    shifted = pd.concat([low, high], ignore_index=True)
    text = next(s for s in findings(shifted, paired_differences(shifted, [FPR]), FPR,
                                    difference_in_differences(shifted, [FPR])) if s.startswith("`gender`"))
    assert NO_REFERENCE in text and "`token` moves it by -0.125" in text


def test_metric_bounds_registry():
    assert metric_bounds("macro_f1") == (0.0, 1.0) and metric_bounds("bias_type/fpr_gap") == (0.0, 1.0)
    assert metric_bounds(FPR) == (0.0, 1.0) and metric_bounds("task/bbq/s_dis") == (-1.0, 1.0)
    assert metric_bounds("task/hatecheck/target_excess_fpr") == (-1.0, 1.0)
    assert metric_bounds("task/salary/spread_mean") is None and metric_bounds("mystery") is None
    from bias_ray.evaluate.tasks import task_listing

    for name, entry in task_listing()["tasks"].items():
        for m in entry.get("report_metrics", []):  # declared beside the task: a range, or null for none
            assert m in (entry.get("bounds") or {}), f"tasks.yaml: {name} lacks bounds: {{{m}: [low, high] or null}}"
    assert difference_bounds((0.0, 1.0)) == (-1.0, 1.0) and difference_bounds((0.0, 1.0), terms=2) == (-2.0, 2.0)
    assert difference_bounds((-1.0, 1.0)) == (-2.0, 2.0) and difference_bounds(None) is None


def test_interval_ends_are_cut_at_the_range_and_say_so():
    values = [0.1, 0.9, 0.95]  # mean 0.65; the t-interval over 3 seeds spans about [-0.53, 1.83]
    raw, cut = t_interval(values), t_interval(values, bounds=(0.0, 1.0))
    assert raw.low < 0 and raw.high > 1 and not raw.clipped
    assert cut.mean == raw.mean == pytest.approx(0.65) and (cut.low, cut.high) == (0.0, 1.0) and cut.clipped
    assert cut.text() == "0.650 [0.000, 1.000] clipped"
    assert cut.bracket() == "95% CI [+0.000, +1.000], clipped to [0, 1], n=3"
    inside = t_interval([0.4, 0.5, 0.6], bounds=(0.0, 1.0))
    assert not inside.clipped and inside.text().startswith("0.500 ± ")
    one_cut = t_interval([0.0, 0.02, 0.04], bounds=(0.0, 1.0))  # only the low end passes 0
    assert one_cut.clipped and one_cut.low == 0.0 and one_cut.high == pytest.approx(t_interval([0.0, 0.02, 0.04]).high)
    assert Interval(0.5, float("nan"), float("nan"), 1).clip((0.0, 1.0)).text() == "0.500 (n=1)"


def test_tables_and_figures_cut_intervals_at_the_range():
    rows = [{"bias_type": "gender", "mitigation": mit, "bias_ratio": 0.5, "seed": s, FPR: v}
            for mit, vals in (("none", [0.1, 0.9, 0.95]), ("token", [0.4, 0.5, 0.6])) for s, v in enumerate(vals)]
    table = pd.DataFrame(rows)
    means = mean_ci_table(table, [FPR])
    text = format_mean_ci(means, [FPR]).set_index("mitigation")["ratio 0.5"]
    assert text["none"] == "0.650 [0.000, 1.000] clipped" and text["token"].startswith("0.500 ± 0.248")
    assert means.set_index("mitigation").loc["none", f"{FPR} ci"] > 1  # the t half-width itself is kept
    headline = intervals_by_ratio(table, FPR).iloc[0]
    assert headline["none"] == "0.650 [0.000, 1.000] clipped"
    ratios, mids, bars, clipped = error_bars(table[table["mitigation"] == "none"], FPR, metric_bounds(FPR))
    assert ratios == [0.5] and mids == pytest.approx([0.65]) and clipped
    assert bars[:, 0] == pytest.approx([0.65, 0.35])  # down to 0, up to 1: uneven
    *_, bars, clipped = error_bars(table[table["mitigation"] == "token"], FPR, metric_bounds(FPR))
    assert not clipped and bars[0, 0] == pytest.approx(bars[1, 0])
    # paired: differences 0.3, -0.4, -0.35 stay inside [-1, 1]; with 1, 1, -0.7 the CI is cut at it
    wide = table.copy()
    wide.loc[wide["mitigation"] == "none", FPR] = [0.0, 0.0, 0.9]
    wide.loc[wide["mitigation"] == "token", FPR] = [1.0, 1.0, 0.2]
    row = paired_differences(wide, [FPR]).iloc[0]
    assert row["clipped"] and (row["diff_low"], row["diff_high"]) == (-1.0, 1.0)
    assert row["difference"] == pytest.approx(1.3 / 3) and row["verdict"] == "indistinguishable"
    assert wins_tables(paired_differences(wide, [FPR]))["gender"].iloc[0]["ratio 0.5"] == (
        "+0.433 [-1.000, +1.000] clipped indistinguishable")


def test_did_interval_is_cut_at_twice_the_range():
    # per seed (a - b) - (c - d) = 2, 2, -2: mean 0.667, t-interval about [-5.1, 6.4] -> cut at [-2, 2]
    cells = {("m", 0.5): [1, 1, 0], ("none", 0.5): [0, 0, 1], ("m", 0.0): [0, 0, 1], ("none", 0.0): [1, 1, 0]}
    table = pd.DataFrame([{"bias_type": "g", "mitigation": mit, "bias_ratio": r, "seed": s, FPR: float(v)}
                          for (mit, r), vals in cells.items() for s, v in enumerate(vals)])
    row = difference_in_differences(table, [FPR]).iloc[0]
    assert row["difference"] == pytest.approx(2 / 3) and row["clipped"] and row["bound"] == 2.0
    assert (row["diff_low"], row["diff_high"]) == (-2.0, 2.0)


def test_inheritance_intervals_are_cut_at_the_range():
    rows = [{"bias_type": "gender", "mitigation": "none", "bias_ratio": r, "seed": s, FPR: v}
            for r, vals in ((0.0, [0.0, 0.02, 0.04]), (0.9, [0.1, 0.9, 0.95])) for s, v in enumerate(vals)]
    (i,) = inheritance(pd.DataFrame(rows), FPR)
    assert i.at_low.clipped and i.at_low.low == 0.0 and i.at_high.clipped and i.at_high.high == 1.0
    # the change 0.1, 0.88, 0.91: mean 0.63, t-interval about [-0.51, 1.77] -> cut at [-1, 1]
    assert i.change.clipped and i.change.bounds == (-1.0, 1.0) and i.change.high == 1.0
    assert i.change.mean == pytest.approx(0.63) and i.change.low == pytest.approx(t_interval([0.1, 0.88, 0.91]).low)


def _hatecheck_sweep(excess_rise: float) -> pd.DataFrame:
    """`none` at ratios 0 and 0.5, 3 seeds: every group's FPR rises by ~0.3; the targeted groups' by
    ``excess_rise`` more."""
    rows = []
    for seed, (other0, jitter, noise) in enumerate([(0.2, 0.01, 0.01), (0.25, -0.02, -0.012), (0.3, 0.015, 0.005)]):
        for ratio in (0.0, 0.5):
            other = other0 + (0.3 + jitter if ratio else 0.0)
            excess = 0.05 + (excess_rise + noise if ratio else 0.0)
            rows.append({"bias_type": "gender", "bias_ratio": ratio, "mitigation": "none", "seed": seed,
                         FPR: other + excess, "task/hatecheck/other_fpr": other,
                         "task/hatecheck/target_excess_fpr": excess})
    return pd.DataFrame(rows)


def test_summary_splits_the_headline_change_into_every_group_and_the_targeted_groups():
    shift = _hatecheck_sweep(excess_rise=0.0)
    text = next(s for s in findings(shift, paired_differences(shift, [FPR]), FPR) if s.startswith("`gender`"))
    assert "is an effect, worse (95% CI excludes 0)" in text.split("Control:")[0]
    control = text.split("Control:")[1]
    assert "(`task/hatecheck/other_fpr`) the change from ratio 0 to 0.5 is +0.302" in control
    assert "an effect (95% CI excludes 0)" in control.split(";")[0]
    assert "(`task/hatecheck/target_excess_fpr` = target - other) changes by +0.001" in control
    assert "not shown to be specific to these groups" in control
    # the targeted groups' false alarms rise more than the others': the part specific to them is an effect
    biased = _hatecheck_sweep(excess_rise=0.2)
    text = next(s for s in findings(biased, paired_differences(biased, [FPR]), FPR) if s.startswith("`gender`"))
    specific = text.split("Control:")[1].split(";")[1]
    assert "changes by +0.201" in specific and "an effect (95% CI excludes 0)" in specific
    assert "not shown to be specific" not in text
    # without the control's columns (an older results table) the sentence is left out
    older = shift.drop(columns=["task/hatecheck/other_fpr"])
    assert "Control:" not in " ".join(findings(older, paired_differences(older, [FPR]), FPR))
    assert "(a label-balance shift, for one)" in control  # no train_positive_share: the likely reason, hedged


@pytest.mark.parametrize("shares, reason", [
    ((0.59, 0.79), "the mix's share of label 1 went from 0.59 to 0.79: a label-balance shift"),
    ((0.59, 0.59), "with the mix's share of label 1 held at 0.59, not a label shift"),
])
def test_the_summary_says_a_label_shift_only_when_the_mix_label_balance_moved(shares, reason):
    shift = _hatecheck_sweep(excess_rise=0.0)
    shift["train_positive_share"] = np.where(shift["bias_ratio"] == 0, shares[0], shares[1])
    text = next(s for s in findings(shift, paired_differences(shift, [FPR]), FPR) if s.startswith("`gender`"))
    assert "not shown to be specific to these groups" in text and reason in text


def test_what_ran_says_the_mix_label_balance_per_ratio_and_how_labels_were_set():
    from bias_ray.report.summary import what_ran

    table = pd.DataFrame({"bias_type": "gender", "bias_ratio": [0.0, 0.0, 0.5, 0.5], "mitigation": "none",
                          "seed": [0, 1, 0, 1], "train_positive_share": [0.58, 0.60, 0.78, 0.80]})
    spec = {"training": {"mix_mode": "fixed_total", "mix_labels": "real", "train_size": 320}, "data": {}}
    text = " ".join(what_ran(table, spec, None, {}, failed=0, stopped=0))
    assert "0.59 at ratio 0, 0.79 at ratio 0.5" in text
    assert "fixed_total mix, labels at the real data's shares" in text
    spec["training"]["mix_labels"] = "pooled"
    older = " ".join(what_ran(table.drop(columns="train_positive_share"), spec, None, {}, failed=0, stopped=0))
    assert "Label balance" not in older and "(fixed_total mix)" in older  # a results table from before the column


def test_the_control_sentence_gives_the_threshold_free_change_and_says_when_it_does_not_confirm_the_fpr_excess():
    swung = _hatecheck_sweep(excess_rise=0.2)
    swung["task/hatecheck/target_excess_auc"] = 0.65 + np.where(swung["bias_ratio"] == 0, 0.0,
                                                                 [0.03, -0.04, 0.01] * 2)
    text = next(s for s in findings(swung, paired_differences(swung, [FPR]), FPR) if s.startswith("`gender`"))
    assert "(`task/hatecheck/target_excess_auc`, 0.5 = no group-specific bias)" in text
    assert "does not confirm the change of the false-positive excess" in text
    swung["task/hatecheck/target_excess_auc"] += np.where(swung["bias_ratio"] == 0, 0.0, 0.2)
    text = next(s for s in findings(swung, paired_differences(swung, [FPR]), FPR) if s.startswith("`gender`"))
    assert "does not confirm" not in text and "an effect (95% CI excludes 0)" in text.split("target_excess_auc")[1]
    # with mitigations at ratio 0 and 0.5, the prose also gives each one's DiD on the findings table's metric
    token = swung.assign(mitigation="token")
    token["task/hatecheck/target_excess_auc"] -= np.where(token["bias_ratio"] == 0, 0.0, [0.19, 0.21, 0.2] * 2)
    both = pd.concat([swung, token], ignore_index=True)
    metrics = [FPR, "task/hatecheck/target_excess_auc"]
    text = next(s for s in findings(both, paired_differences(both, metrics), FPR,
                                    difference_in_differences(both, metrics)) if s.startswith("`gender`"))
    group = text.split("On the group-specific `task/hatecheck/target_excess_auc` (the findings table's): ")[1]
    assert "`token` alters the change from ratio 0 to 0.5 by -0.200" in group and "better" in group
