"""HateCheck (Röttger et al., ACL 2021): functional tests of the trial's hate classifier, per target group.

HateCheck is the fine-tuning task itself (hate vs not) on 3,728 hand-built cases in 29 functionalities,
so the task scores the trial's *trained classifier* (``TaskContext.classify``, which applies the
mitigation's evaluation transform, e.g. the token mitigation's ``<real>`` tag), on every case. Without a
classifier (tasks run on a bare causal LM) it falls back to the zero-shot, calibrated yes/no
log-likelihood of the ``toxigen`` task, on rows capped by ``max_rows_per_task`` like the other LM tasks;
``trained_classifier`` (1 or 0) says which one answered. The classifier sees every case unless the
task's ``max_rows`` option (tasks.yaml, default null) caps them, spread evenly over the groups: a
forward pass per case cost 2.3-3.2 ms for the tiny student at one torch thread on the shared 2-core machine
under load average ~25, i.e. 9-12 s per trial (bench/hatecheck_task.py).

Positive class = hateful. With FP, TN, FN, TP counted over a set of cases:

* ``FPR = FP / (FP + TN)`` over its non-hateful cases (neutral or positive identity mentions,
  counter-speech, negated hate, reclaimed slurs, ...): hate flagged where there is none;
* ``FNR = FN / (FN + TP)`` over its hateful cases: hate missed.

Sets: *target* = cases whose ``target_ident`` is one of the trial's bias types' ``hatecheck_groups``
(``target_fpr``, the headline, and ``target_fnr``); *other* = cases of the HateCheck groups the augmented
data does not write about, a control (``other_fpr``, ``other_fnr``): a group is left out of it when a bias
type of the catalog that names it shares a real-data group with the trial's (gender's ``lgbtq`` rows are
also sexual orientation's, so "gay people" is no control for gender; :func:`overlapping_groups`);
``target_excess_fpr = target_fpr - other_fpr``, the part of the
false alarms that is specific to the targeted groups (augmented data that shifts the label balance raises
every group's FPR; inheriting a *group* association raises the targeted groups' more: 0 is group-fair);
all cases, the 292 without a target included (``fpr``, ``fnr``);
``target_excess_auc``, the same comparison without a threshold, where the classifier gives scores
(``TaskContext.score``, P(hate)): over the non-hateful cases, with ``s`` the score,

    target_excess_auc = P(s(t) > s(c)) + 1/2 P(s(t) = s(c)),  t ~ target non-hateful, c ~ control non-hateful

(the Mann-Whitney U of the two sets over ``n_t n_c``; 0.5: the targeted groups' harmless cases score like the
control's; above 0.5: they look more hateful to the classifier). A rate at a threshold moves with the
classifier's overall calibration, which differs from seed to seed (a student that flags 90% of every group
leaves no room for an excess); a rank comparison within one classifier does not (Borkan et al., 2019, rank
subgroups against the background the same way in their BPSN/BNSP AUCs);
each group (``<slug>/fpr``, ``<slug>/fnr``, slug e.g. ``trans`` for "trans people"). Per functionality
over the target cases, ``func/<functionality>/error = n(pred != label) / n``, which is the FPR of a
non-hateful functionality and the FNR of a hateful one (each functionality has one gold label);
Röttger et al. report its complement, accuracy per functionality. A set without the cases a rate
needs gives NaN.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from bias_ray.catalog import bias_type_catalog
from bias_ray.data.loaders import hatecheck_slug, load_hatecheck
from bias_ray.evaluate.tasks import TASKS, Task, TaskContext, cap_rows
from bias_ray.evaluate.tasks.toxigen import zero_shot_hate_labels
from bias_ray.measures.metrics import rank_auc
from bias_ray.spec import BiasType

log = logging.getLogger(__name__)


def false_positive_rate(label: np.ndarray, pred: np.ndarray) -> float:
    """FP / (FP + TN) over the non-hateful cases (label 0); NaN without any."""
    neg = label == 0
    return float(np.mean(pred[neg] == 1)) if neg.any() else float("nan")


def false_negative_rate(label: np.ndarray, pred: np.ndarray) -> float:
    """FN / (FN + TP) over the hateful cases (label 1); NaN without any."""
    pos = label == 1
    return float(np.mean(pred[pos] == 0)) if pos.any() else float("nan")


def _rates(p: pd.DataFrame) -> tuple[float, float]:
    y, pred = p["label"].to_numpy(), p["pred"].to_numpy()
    return false_positive_rate(y, pred), false_negative_rate(y, pred)


def overlapping_groups(bias_types: list[BiasType]) -> set[str]:
    """HateCheck groups of the catalog's bias types that share a real-data group with ``bias_types``.

    The augmented rows of a bias type are about its ``groups``; a catalog type with one of those groups
    (e.g. ``lgbtq`` in gender and in sexual_orientation) has HateCheck groups the rows also write about,
    so they cannot serve as the untouched control.
    """
    groups = {g for b in bias_types for g in b.groups}
    return {h for entry in bias_type_catalog().values() if groups & set(entry.get("groups", []))
            for h in entry.get("hatecheck_groups", [])}


def hatecheck_scores(p: pd.DataFrame) -> dict[str, float]:
    """Metrics from columns label, pred (1 = hateful), group ("" = no target), is_target, functionality,
    and optionally is_control (default: every case with a group that is not a target)."""
    has_group = p["group"].astype(str) != ""
    control = p["is_control"].astype(bool) if "is_control" in p else has_group & ~p["is_target"].astype(bool)
    target, other = p[p["is_target"].astype(bool)], p[control]
    out: dict[str, float] = {"n": float(len(p)), "n_target": float(len(target)), "n_other": float(len(other))}
    out["fpr"], out["fnr"] = _rates(p)
    out["target_fpr"], out["target_fnr"] = _rates(target)
    out["other_fpr"], out["other_fnr"] = _rates(other)
    out["target_excess_fpr"] = out["target_fpr"] - out["other_fpr"]
    if "score" in p:
        out["target_excess_auc"] = rank_auc(target.loc[target["label"] == 0, "score"].to_numpy(float),
                                            other.loc[other["label"] == 0, "score"].to_numpy(float))
    for group, sub in p[has_group].groupby("group", sort=True):
        slug = hatecheck_slug(group)
        out[f"{slug}/fpr"], out[f"{slug}/fnr"] = _rates(sub)
    for functionality, sub in target.groupby("functionality", sort=True):
        out[f"func/{functionality}/error"] = float(np.mean(sub["pred"].to_numpy() != sub["label"].to_numpy()))
    if "by_classifier" in p.columns and len(p):
        out["trained_classifier"] = float(p["by_classifier"].all())
    return out


@TASKS.register("hatecheck")
class HateCheckTask(Task):
    def rows(self, ctx: TaskContext) -> pd.DataFrame:
        rows = load_hatecheck(ctx.data_root)
        targets = {g for b in ctx.bias_types for g in b.hatecheck_groups}
        unknown = targets - set(rows["group"])
        if unknown:
            raise ValueError(f"hatecheck_groups {sorted(unknown)} are not HateCheck target groups; "
                             f"use its target_ident values: {sorted(set(rows['group']) - {''})}")
        if not targets:
            log.warning("task %s: bias types %s list no hatecheck_groups; target_* metrics are NaN",
                        self.name, [b.name for b in ctx.bias_types])
        rows["is_target"] = rows["group"].isin(targets)
        rows["is_control"] = (rows["group"] != "") & ~rows["group"].isin(targets | overlapping_groups(ctx.bias_types))
        if ctx.classify is None and ctx.score is None:  # the LM fallback costs two passes a case: cap it as LM tasks
            return ctx.cap(rows, "group")
        return cap_rows(rows, "group", self.options.get("max_rows"))  # the classifier: all cases by default

    def predict(self, lm, rows: pd.DataFrame, ctx: TaskContext) -> pd.DataFrame:
        texts = rows["text"].astype(str).tolist()
        out = rows.copy()
        if ctx.score is not None:  # P(hate) per case: the label is its argmax, and the scores rank the cases
            scores = np.asarray(ctx.score(texts), dtype=float).reshape(-1)
            if len(scores) != len(texts):
                raise ValueError(f"score returned {len(scores)} values for {len(texts)} texts")
            out["score"] = scores
            pred = (scores > 0.5).astype(int)
        elif ctx.classify is not None:
            pred = np.asarray(ctx.classify(texts)).astype(int).reshape(-1)
            if len(pred) != len(texts):
                raise ValueError(f"classify returned {len(pred)} labels for {len(texts)} texts")
        else:
            pred = zero_shot_hate_labels(lm, texts, self.options)
        out["pred"] = pred
        out["by_classifier"] = ctx.classify is not None or ctx.score is not None
        return out

    def score(self, predictions: pd.DataFrame) -> dict[str, float]:
        return hatecheck_scores(predictions)
