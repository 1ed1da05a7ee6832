"""The paper's cultural classification: the trial's classifier on many cultural test sets, macro-F1 each.

The paper scores culture on 16 classification test sets (offensive, hate, bias and related labels in
Arabic, Chinese, Portuguese and Spanish data) and splits them into those whose label is *directly*
related to bias (e.g. hate or bias toward a group) and those *indirectly* related (e.g. spam, sentiment).
Which 16 the note does not list, and none is on this machine: a spec names each set under
``evaluation.task_options.cultural_sets.sets``, as

    {name: ..., path: <hub id | save_to_disk folder | .jsonl/.parquet/.csv>, config: null, split: test,
     columns: {text: <column>, label: <column>}, culture: arabic, relation: direct | indirect}

Each set's ``label`` is 0/1 with 1 the class the fine-tuning task calls positive (hate, offensive, biased).
Like HateCheck, the task scores the trial's *trained classifier* (``TaskContext.classify``); on a bare
causal LM it falls back to the zero-shot calibrated yes/no of the ``toxigen`` task. Metrics, with
``F1_macro`` the unweighted mean of the two classes' F1 (``evaluate.metrics.macro_f1``):

* ``<set>/macro_f1`` per set;
* ``macro_f1``, the mean over the sets (the paper's figure); ``direct/macro_f1`` and ``indirect/macro_f1``,
  the means over each relation; ``<culture>/macro_f1``, the mean over a culture's sets;
* ``direct_minus_indirect``, the gap between the relations: a student whose augmented data carried bias
  should lose more where the label is bias.

A set that cannot be read fails the spec check before any work, naming the set and the fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bias_ray.data.custom import DataError, read_table
from bias_ray.evaluate.tasks import TASKS, Task, TaskContext, cap_rows
from bias_ray.evaluate.tasks.toxigen import zero_shot_hate_labels
from bias_ray.measures.metrics import macro_f1

RELATIONS = ("direct", "indirect")
FIELD = "evaluation.task_options.cultural_sets.sets"


def load_set(entry: dict[str, Any], where: str) -> pd.DataFrame:
    """One set's test rows as ``text``, ``label`` (0/1), with its name, culture and relation."""
    for key in ("name", "path"):
        if not entry.get(key):
            raise DataError(f"{where}: every set needs `{key}` (e.g. {{name: osact4, path: user/osact4, "
                            "culture: arabic, relation: direct, columns: {text: tweet, label: offensive}}})")
    relation = entry.get("relation", "direct")
    if relation not in RELATIONS:
        raise DataError(f"{where}: set {entry['name']!r}: relation {relation!r}; allowed: {', '.join(RELATIONS)}")
    raw = read_table(str(entry["path"]), entry.get("config"), entry.get("split", "test"),
                     field=f"{where} ({entry['name']})")
    columns = {"text": "text", "label": "label", **(entry.get("columns") or {})}
    missing = [theirs for theirs in columns.values() if theirs not in raw]
    if missing:
        raise DataError(f"{where}: set {entry['name']!r} has no column(s) {missing} (has: "
                        f"{', '.join(map(str, raw.columns))}); map them with columns: {{text: ..., label: ...}}")
    label = pd.to_numeric(raw[columns["label"]].map(lambda v: int(v) if isinstance(v, bool) else v), errors="coerce")
    bad = raw.index[~label.isin([0, 1])]
    if len(bad):
        held = sorted({repr(v) for v in raw.loc[bad[:5], columns["label"]]})
        raise DataError(f"{where}: set {entry['name']!r}: column {columns['label']!r} must be 0 or 1 (1: the positive "
                        f"class, e.g. offensive); rows {list(bad[:5])} hold {', '.join(held)}")
    return pd.DataFrame({"text": raw[columns["text"]].astype(str), "label": label.astype(int),
                         "set": str(entry["name"]), "culture": str(entry.get("culture", "")), "relation": relation})


@TASKS.register("cultural_sets")
class CulturalSetsTask(Task):
    """Macro-F1 of the trial's classifier on each listed cultural test set, and its means."""

    @property
    def sets(self) -> list[dict[str, Any]]:
        return list(self.options.get("sets") or [])

    def _load(self) -> pd.DataFrame:
        if not self.sets:
            raise DataError(f"{FIELD}: no set is listed; name each test set (hub id, save_to_disk folder or file) "
                            "with its culture and relation, as in sweeps/paper_culture.yaml")
        names = [s.get("name") for s in self.sets]
        if len(set(names)) != len(names):
            raise DataError(f"{FIELD}: set names repeat: {names}")
        return pd.concat([load_set(s, FIELD) for s in self.sets], ignore_index=True)

    def check(self, ctx: TaskContext) -> list[str]:
        try:
            self._load()
        except DataError as err:
            return [f"task cultural_sets: {err}"]
        return []

    def rows(self, ctx: TaskContext) -> pd.DataFrame:
        rows = self._load()
        limit = self.options.get("max_rows_per_set")
        return pd.concat([cap_rows(g, "label", limit) for _, g in rows.groupby("set", sort=False)], ignore_index=True)

    def predict(self, lm, rows: pd.DataFrame, ctx: TaskContext) -> pd.DataFrame:
        texts = rows["text"].tolist()
        out = rows.copy()
        if ctx.classify is not None:
            out["pred"] = np.asarray(ctx.classify(texts)).astype(int)
        else:
            out["pred"] = zero_shot_hate_labels(lm, texts, self.options)
        out["trained_classifier"] = int(ctx.classify is not None)
        return out

    def score(self, predictions: pd.DataFrame) -> dict[str, float]:
        return cultural_scores(predictions)


def cultural_scores(p: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {"n": float(len(p))}
    per_set = {name: macro_f1(g["label"].to_numpy(), g["pred"].to_numpy()) for name, g in p.groupby("set", sort=True)}
    out.update({f"{name}/macro_f1": v for name, v in per_set.items()})
    sets = p.drop_duplicates("set").set_index("set")
    out["macro_f1"] = float(np.mean(list(per_set.values())))
    for column in ("relation", "culture"):
        for value, names in sets.groupby(column).groups.items():
            if value:
                out[f"{value}/macro_f1"] = float(np.mean([per_set[n] for n in names]))
    out["direct_minus_indirect"] = out.get("direct/macro_f1", np.nan) - out.get("indirect/macro_f1", np.nan)
    if "trained_classifier" in p:
        out["trained_classifier"] = float(p["trained_classifier"].iloc[0])
    return out
