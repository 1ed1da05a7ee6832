"""Multi-round self-augmentation (issue 24): round k's fine-tuned student, merged, writes round k+1's data."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from bias_ray.spec import SpecError, parse_spec, round_spec
from tests.conftest import micro_spec_dict


def rounds_spec(tmp_path, tiny_model, data_root, **rounds) -> dict:
    return micro_spec_dict(tmp_path, tiny_model, data_root, rounds={"count": 2, **rounds},
                           training={"student_kind": "causal_lm", "train_size": 32, "eval_every": 2,
                                     "max_eval_rows": 32, "lm_loss": "full", "learning_rate": 0.01},
                           generation={"samples_per_bias_type": 16, "max_new_tokens": 8, "batch_size": 8},
                           analysis={"enabled": False})


def test_rounds_need_a_student_that_can_write(tmp_path, tiny_model, data_root):
    d = micro_spec_dict(tmp_path, tiny_model, data_root, rounds={"count": 2, "carry": {"bias_ratio": 0.7}})
    with pytest.raises(SpecError) as err:
        parse_spec(d, check_files=False)
    assert "training.student_kind must be causal_lm" in str(err.value)
    assert "rounds.carry.bias_ratio 0.7 is not in bias_ratios [0.0, 0.5]" in str(err.value)
    spec = parse_spec(rounds_spec(tmp_path, tiny_model, data_root), check_files=False)
    assert spec.carried_cell(["none"]) == {"bias_type": "religion", "bias_ratio": 0.5, "mitigation": "none", "seed": 0}
    two = round_spec(spec, 2, "/models/carried")
    assert two.name == "micro-round2" and two.run_dir == spec.run_dir / "rounds" / "round-2"
    assert two.models.generator == "/models/carried" and two.rounds.count == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_rounds_run_resume_and_plot_every_metric_against_the_round(tmp_path, tiny_model, data_root):
    from transformers import AutoModelForCausalLM

    from bias_ray.cli import app

    spec = rounds_spec(tmp_path, tiny_model, data_root)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = CliRunner().invoke(app, ["run", str(path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    run = tmp_path / "run"
    carried = run / "carried_student"
    round2 = run / "rounds" / "round-2"
    assert "round 2 of 2" in out.output
    # round 2's generator is round 1's trained student, merged: a plain causal LM, not the base model
    job = json.loads((round2 / "data" / "augmented" / "job.json").read_text())
    assert job["model"] == str(carried)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    merged = AutoModelForCausalLM.from_pretrained(carried).state_dict()
    assert base.keys() == merged.keys()
    assert any(not (base[k] == merged[k]).all() for k in base)  # LoRA merged into the weights
    ids = [set(pd.read_parquet(d / "data" / "augmented" / "shards")["sample_id"]) for d in (run, round2)]
    assert ids[0] and ids[1] and not ids[0] & ids[1]  # another generator: other samples
    # every round's data and results are kept, and the rounds report has each metric by round
    table = pd.read_parquet(run / "rounds" / "results.parquet")
    assert sorted(table["round"].unique()) == [1, 2] and len(table) == 4
    summary = pd.read_csv(run / "rounds" / "summary.csv")
    assert {"round", "macro_f1", "macro_f1 ci"} <= set(summary.columns)
    assert (run / "rounds" / "macro_f1_vs_round.png").stat().st_size > 0
    assert "macro_f1_vs_round.png" in (run / "rounds" / "report.md").read_text()
    # resumable per round: a second run redoes nothing (the carried student is not rewritten)
    stamp = (carried / "config.json").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["run", str(path)], env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert (carried / "config.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(pd.read_parquet(run / "rounds" / "results.parquet")[["round", "macro_f1"]],
                                  table[["round", "macro_f1"]])
