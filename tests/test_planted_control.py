"""The instrument passes its positive control: a planted group-to-hate tie is found with a CI that excludes 0.

The quickstart's student (all-MiniLM-L6-v2 with LoRA), mix (labels held at the real shares) and
group-specific metric (HateCheck ``target_excess_auc``: the probability that a harmless case about the
targeted groups gets a higher hate score than a harmless case about a control group), with a plant
whose truth is known: every augmented row is a real ToxiGen *train-split* hateful statement about the
gender bias type's groups (women, trans, LGBTQ people), labelled hateful. At ratio 0.5 the hateful class
is then mostly about those groups while its share stays the real one, so a student that learns from its
data flags non-hateful texts about them more than texts about the control groups. The test fails if the
paired change from ratio 0 to 0.5 under ``none`` is not positive with a 95% t-interval over 3 seeds
that excludes 0, i.e. if the student, the mix or the metric stopped seeing a bias that is there.
(``sweeps/planted.yaml`` runs the same control with SmolLM2's own hateful statements and every mitigation.)
"""

from __future__ import annotations

import pandas as pd
import pytest

from bias_ray.data.loaders import load_toxigen
from bias_ray.spec import parse_spec
from tests.conftest import micro_spec_dict
from tests.test_planted_bias import write_augmented

GROUPS = ["women", "trans", "lgbtq"]


def plant(data_root) -> pd.DataFrame:
    real = load_toxigen(data_root)
    rows = real[(real["split"] == "train") & (real["label"] == 1) & real["group"].isin(GROUPS)]
    return pd.DataFrame({"id": [f"plant-{i}" for i in range(len(rows))], "text": rows["text"].tolist(),
                         "label": 1, "group": rows["group"].tolist(), "bias_type": "gender"})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_planted_tie_is_detected_by_the_group_specific_metric(tmp_path, tiny_model, data_root):
    from bias_ray.report.stats import t_interval
    from bias_ray.train.trainable import fit

    d = micro_spec_dict(tmp_path, tiny_model, data_root, bias_types=["gender"], bias_ratios=[0.0, 0.5],
                        training={"train_size": 200, "epochs": 2, "batch_size": 16, "learning_rate": 0.002,
                                  "eval_every": 1000, "max_length": 40, "max_eval_rows": 64, "mix_labels": "real"},
                        evaluation={"tasks": ["hatecheck"], "task_options": {"hatecheck": {"max_rows": 800}}})
    d["models"]["student"] = "packaged:all-minilm-l6-v2"
    write_augmented(d, plant(data_root))
    spec = parse_spec(d, check_files=False)
    excess: dict[tuple[float, int], float] = {}
    fpr: dict[tuple[float, int], float] = {}
    for ratio in (0.0, 0.5):
        for seed in (0, 1, 2):
            cfg = {"bias_type": "gender", "bias_ratio": ratio, "mitigation": "none", "seed": seed, "cpus": 2}
            # one report, at the last step, with the trial's own HateCheck scores (as a sweep's trial has them)
            last = fit(spec, cfg, lambda _m, _s: None)
            assert abs(last["train_positive_share"] - 0.59) < 0.02  # the label balance is held: no label shift
            excess[(ratio, seed)] = last["task/hatecheck/target_excess_auc"]
            fpr[(ratio, seed)] = last["task/hatecheck/target_excess_fpr"]
    change = t_interval([excess[(0.5, s)] - excess[(0.0, s)] for s in (0, 1, 2)])
    print(f"\nplanted: target_excess_auc change 0 -> 0.5 under none: {change.text(signed=True)}; cells {excess}; "
          f"target_excess_fpr {fpr}")
    assert change.low > 0, f"the planted tie was not detected: {change.text(signed=True)}; cells {excess}"
