"""Planted bias: augmented data that ties one group to one label is inherited by a tiny student.

The augmented rows of bias type ``religion`` are real neutral sentences prefixed with a group
term; every Muslim-term row is labelled hate (1) and every Jewish-term row neutral (0), so the
group term alone predicts the label. The fairness gap is measured two ways: ``bias_type/fpr_gap``
of the trial on the real held-out rows (few: ToxiGen has ~15 religion test rows), and a probe gap,
the difference in hate-prediction rate between the two groups on held-out real neutral sentences
given a group term.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bias_ray.data.loaders import load_toxigen
from bias_ray.generate.imported import import_augmented
from bias_ray.spec import parse_spec
from tests.conftest import micro_spec_dict

HATE_GROUP = {"muslim": ["Muslims", "Islam", "Muslim"], "jewish": ["Jews", "Judaism", "Jewish"]}
PLANTED_LABEL = {"muslim": 1, "jewish": 0}


def planted_rows(data_root: Path, n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Augmented religion rows whose label is a function of the group term only."""
    real = load_toxigen(data_root)
    neutral = real[(real["split"] == "train") & (real["label"] == 0)]["text"].tolist()
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        group = ("muslim", "jewish")[k % 2]
        term = HATE_GROUP[group][rng.integers(len(HATE_GROUP[group]))]
        text = f"{term}: {neutral[rng.integers(len(neutral))]}"
        rows.append({"id": f"planted-{k}", "text": text, "label": PLANTED_LABEL[group], "group": group,
                     "bias_type": "religion", "split": "train", "source": "augmented"})
    return pd.DataFrame(rows)


def write_augmented(spec_dict: dict, rows: pd.DataFrame) -> None:
    """Lay ``rows`` out as a finished generation job of the spec (what ``load_augmented`` reads)."""
    import_augmented(parse_spec(spec_dict, check_files=False), rows, source="planted")


def probe_gap(model, student, mitigation, data_root: Path) -> float:
    """P(hate | Muslim probe) - P(hate | Jewish probe) over real held-out neutral sentences.

    A probe is ``"<group term>: <sentence>"``, the planted form, so the gap measures how much the
    student ties the group term itself to the label (a tiny BPE model shares no sub-words between
    "Muslims:" at the start and " Muslim" mid-sentence, so other templates would test tokenization).
    """
    from bias_ray.train.trainable import predict

    real = load_toxigen(data_root)
    neutral = real[(real["split"] == "test") & (real["label"] == 0)]["text"].head(80).tolist()
    rates = {}
    for group, terms in HATE_GROUP.items():
        probes = pd.DataFrame({"text": [f"{terms[k % len(terms)]}: {t}" for k, t in enumerate(neutral)]})
        probes = mitigation.transform_eval(probes)
        rates[group] = float(predict(model, student, probes["text"].tolist()).mean())
    return rates["muslim"] - rates["jewish"]


def run_cell(tmp_path: Path, tiny_model: Path, data_root: Path, ratio: float, mitigation: dict | str) -> dict:
    """Fit one cell in-process; return its last metrics plus the probe gap of the final weights."""
    from bias_ray.spec import parse_spec
    from bias_ray.train.trainable import build_mitigation, build_student, fit

    d = micro_spec_dict(
        tmp_path, tiny_model, data_root,
        bias_ratios=[ratio], mitigations=[mitigation],
        training={"train_size": 160, "epochs": 4, "batch_size": 16, "eval_every": 40,
                  "learning_rate": 0.005, "max_eval_rows": 400},
    )
    write_augmented(d, planted_rows(data_root))
    spec = parse_spec(d, check_files=False)
    label = spec.mitigation_specs[0].label
    config = {"bias_type": "religion", "bias_ratio": ratio, "mitigation": label, "seed": 0}
    states: list[dict] = []
    metrics = fit(spec, config, lambda m, s: states.append(s))
    mitigation_obj = build_mitigation(spec, config)
    student, model = build_student(spec, mitigation_obj)
    model.load_state_dict(states[-1]["model"], strict=False)
    metrics["probe_gap"] = probe_gap(model, student, mitigation_obj, data_root)
    metrics["label"] = label
    return metrics


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_planted_bias_grows_with_ratio_and_mitigations_side_by_side(tmp_path, tiny_model, data_root):
    cells = [(0.0, "none"), (0.5, "none"), (0.5, "token"), (0.5, "mask"),
             (0.5, {"name": "loss", "params": {"lambda": 1.0}})]
    results = []
    for k, (ratio, m) in enumerate(cells):
        r = run_cell(tmp_path / str(k), tiny_model, data_root, ratio, m)
        results.append((ratio, r["label"], r["probe_gap"], r["bias_type/fpr_gap"], r["macro_f1"],
                        r.get("mitigation/masked_tokens"), r.get("mitigation/divergence")))
    table = pd.DataFrame(results, columns=["ratio", "mitigation", "probe_gap", "fpr_gap", "macro_f1",
                                           "masked_tokens", "cf_divergence"])
    print("\n" + table.to_string(index=False))
    gap = dict(zip(zip(table["ratio"], table["mitigation"]), table["probe_gap"]))
    # the planted tie is inherited: the gap grows with the share of augmented data
    assert gap[(0.5, "none")] > gap[(0.0, "none")] + 0.2, table
    # masking the group terms of augmented rows leaves nothing to tie: the gap at least halves.
    # The counterfactual term pulls swapped pairs together: the gap shrinks (by 0.32-0.68 over seeds
    # 0-2 here; asserted: by 0.15). Token is only reported: it conditions on provenance and leaves
    # the group term in place.
    assert abs(gap[(0.5, "mask")]) < 0.5 * gap[(0.5, "none")], table
    assert gap[(0.5, "loss(lambda=1.0)")] < gap[(0.5, "none")] - 0.15, table
