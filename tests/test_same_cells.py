"""Cells that train exactly as ``none`` at bias ratio 0 are trained once and copied (train/sweep.same_cells).

The claim each mitigation makes (``same_as_none_without_augmented_rows``) is checked by training
both: a copied cell must hold the very numbers its own trial would have produced.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bias_ray.spec import dump_spec, parse_spec
from bias_ray.train.sweep import (
    cell_key,
    early_stop_summary,
    grid_cells,
    param_space,
    same_cells,
    trained_cells,
    with_copied_cells,
)
from tests.conftest import micro_spec_dict
from tests.test_planted_bias import planted_rows, write_augmented

MITIGATIONS = ["none", "mask", "loss", {"name": "token", "params": {"style": "prefix"}},
               {"name": "loss", "params": {"kind": "mean_alignment"}}, {"name": "mask", "params": {"style": "replace"}},
               "token", {"name": "mask", "params": {"apply_to": "all"}}]
SAME = ["mask", "loss", "token(style=prefix)", "loss(kind=mean_alignment)", "mask(style=replace)"]
NOT_SAME = ["token", "mask(apply_to=all)"]


def spec_of(tmp_path, **overrides):
    settings = {"mitigations": MITIGATIONS, "bias_ratios": [0.0, 0.5], "seeds": [0, 1],
                "bias_types": ["religion", "gender"], **overrides}
    d = micro_spec_dict(tmp_path, tmp_path / "model", tmp_path / "data", **settings)
    return parse_spec(d, check_files=False)


def test_ratio_zero_cells_of_mitigations_that_only_touch_augmented_rows_copy_none(tmp_path):
    spec = spec_of(tmp_path)
    labels = [m.label for m in spec.mitigation_specs]
    assert set(SAME + NOT_SAME + ["none"]) == set(labels)
    copied = same_cells(spec)
    assert copied == {(b, 0.0, m, s): (b, 0.0, "none", s) for b in ("religion", "gender") for s in (0, 1)
                      for m in SAME}
    assert len(trained_cells(spec)) == len(grid_cells(spec)) - 2 * 2 * len(SAME)
    assert not same_cells(spec_of(tmp_path, training={"train_same_cells_once": False}))
    assert not same_cells(spec_of(tmp_path, bias_ratios=[0.25, 0.5]))
    # without none, the first such mitigation is trained and the others copy it
    no_none = spec_of(tmp_path, mitigations=MITIGATIONS[1:])
    assert set(same_cells(no_none).values()) == {(b, 0.0, "mask", s) for b in ("religion", "gender") for s in (0, 1)}


def test_tune_grid_holds_one_flat_config_per_trained_cell_in_tunes_order(tmp_path):
    from ray.tune.search.variant_generator import generate_variants

    spec = spec_of(tmp_path)
    configs = [cfg for _, cfg in generate_variants(param_space(spec))]
    assert sorted(cell_key(c) for c in configs) == sorted(cell_key(c) for c in trained_cells(spec))
    assert len(configs) == len(trained_cells(spec)) and all(c["cpus"] == 1 for c in configs)
    assert all(isinstance(c["bias_ratio"], float) and isinstance(c["seed"], int) for c in configs)
    # the order is Tune's own crossing of the axes, the copied cells left out
    plain = spec_of(tmp_path, training={"train_same_cells_once": False})
    crossed = [cell_key(cfg) for _, cfg in generate_variants(param_space(plain))]
    assert [cell_key(c) for c in configs] == [k for k in crossed if k not in same_cells(spec)]


def test_results_table_gets_a_row_per_copied_cell_and_the_summary_counts_trials_run(tmp_path):
    spec = spec_of(tmp_path, mitigations=["none", "mask", "token"], bias_types=["religion"], seeds=[0])
    rows = []
    for c in trained_cells(spec):
        rows.append({**c, "macro_f1": 0.5 + c["bias_ratio"] + (0.01 if c["mitigation"] == "token" else 0),
                     "iterations": 2, "max_iterations": 2, "steps_run": 4, "total_steps": 4,
                     "stopped_early": False, "error": None, "mitigation_name": c["mitigation"],
                     "mitigation_params": "{}"})
    table = with_copied_cells(pd.DataFrame(rows), spec)
    assert len(table) == len(grid_cells(spec)) == 6
    copy = table[(table["mitigation"] == "mask") & (table["bias_ratio"] == 0.0)].iloc[0]
    assert copy["same_as"] == "none" and copy["macro_f1"] == 0.5 and copy["mitigation_name"] == "mask"
    assert table["same_as"].notna().sum() == 1
    summary = early_stop_summary(table)
    assert summary["trials"] == 5 and summary["copied_cells"] == 1 and summary["iterations_used"] == 10


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_each_claim_holds_a_copied_cell_trains_to_the_same_numbers_as_none(tmp_path, tiny_model, data_root):
    """Train every mitigation that claims it at ratio 0, and one that does not, and compare with none."""
    from bias_ray.train.trainable import train_trial

    d = micro_spec_dict(tmp_path, tiny_model, data_root, mitigations=MITIGATIONS, bias_ratios=[0.0, 0.5],
                        training={"train_size": 32, "batch_size": 16, "epochs": 1, "eval_every": 1,
                                  "max_length": 32, "max_eval_rows": 32, "lora_dropout": 0.1})
    write_augmented(d, planted_rows(data_root, n=40))
    spec = parse_spec(d, check_files=False)
    spec_dict = dump_spec(spec)

    def trial(label: str) -> list[dict]:
        reports = []
        config = {"bias_type": "religion", "bias_ratio": 0.0, "mitigation": label, "seed": 0, "cpus": 1}
        train_trial(config, spec_dict, report=lambda metrics, state: reports.append(metrics))
        timing = ("startup", "mitigation/", "trial_wall_s")  # clocks, and the mitigation's own counters
        return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()
                 if not k.startswith(timing)} for r in reports]

    none = trial("none")
    assert len(none) >= 2 and {"macro_f1", "train_loss", "step"} <= set(none[-1])
    for label in SAME:
        assert trial(label) == none, label
    assert trial("token") != none  # tags every real row: not the same, and not copied
    assert {k[2] for k in same_cells(spec)} == set(SAME)


def recording_trial(config, spec_dict, report=None):
    """A trainable with no model: it notes its cell and reports a value made from it."""
    from pathlib import Path

    from ray import tune

    cell = f"{config['bias_type']}-{config['bias_ratio']}-{config['mitigation']}-{config['seed']}"
    with open(Path(spec_dict["output_dir"]) / "ran.txt", "a") as f:
        f.write(cell + "\n")
    value = 0.5 + config["bias_ratio"] / 10 + 0.01 * config["seed"] + 0.001 * len(config["mitigation"])
    tune.report({"macro_f1": value, "step": 1, "total_steps": 1})


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_live_sweep_trains_each_copied_cell_once_and_resumes_without_training_again(tmp_path, ray_session):
    from bias_ray.train.sweep import run_sweep

    spec = parse_spec({
        "name": "same", "output_dir": str(tmp_path / "run"),
        "models": {"generator": "tiny", "student": "tiny", "build_tiny_if_missing": True},
        "bias_types": ["religion"], "bias_ratios": [0.0, 0.5], "mitigations": ["none", "mask", "loss"],
        "seeds": [0, 1], "training": {"train_size": 32, "epochs": 1},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1},
        "tracking": {"wandb": "disabled"}, "evaluation": {"tasks": []},
    }, check_files=False)
    spec.run_dir.mkdir(parents=True)
    table = run_sweep(spec, trainable=recording_trial, verbose=0)
    ran = (spec.run_dir / "ran.txt").read_text().split()
    assert sorted(ran) == sorted(["religion-0.0-none-0", "religion-0.0-none-1"]
                                 + [f"religion-0.5-{m}-{s}" for m in ("none", "mask", "loss") for s in (0, 1)])
    assert len(table) == 12 and table["error"].isna().all()
    at_zero = table[table["bias_ratio"] == 0.0].set_index(["mitigation", "seed"])
    for m in ("mask", "loss"):
        for s in (0, 1):
            assert at_zero.loc[(m, s), "macro_f1"] == at_zero.loc[("none", s), "macro_f1"]
            assert at_zero.loc[(m, s), "same_as"] == "none"
    assert pd.read_parquet(spec.results_path)["same_as"].notna().sum() == 4
    again = run_sweep(spec, resume=True, trainable=recording_trial, verbose=0)
    assert (spec.run_dir / "ran.txt").read_text().split() == ran  # nothing trained again
    assert len(again) == 12


def test_the_report_counts_copied_cells_apart_from_the_compute_spent():
    import pandas as pd

    from bias_ray.report.summary import what_ran
    from bias_ray.report.tables import compute_table

    table = pd.DataFrame({
        "bias_type": ["gender"] * 3, "bias_ratio": [0.0, 0.0, 0.5], "mitigation": ["none", "mask", "mask"],
        "seed": [0, 0, 0], "steps_run": [10, 10, 10], "trial_wall_s": [5.0, 5.0, 7.0], "wall_time_s": [6.0, 6.0, 8.0],
        "same_as": [None, "gender|0.0|none|0", None]})
    per, totals = compute_table(table, None, None)
    assert totals["trials"] == 2 and totals["copied_cells"] == 1
    assert totals["steps_run"] == 20 and totals["trial_wall_s"] == 12.0 and totals["tune_wall_s"] == 14.0
    grid = what_ran(table, None, None, totals, 0, 0)[0]
    assert "3 cells, 2 trained (1 at ratio 0" in grid
