"""The sweep spec rejects bad input before any work starts, with distinct, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bias_ray.spec import SpecError, load_spec, parse_spec

QUICKSTART = Path(__file__).resolve().parent.parent / "sweeps" / "quickstart.yaml"


def good(tmp_path: Path, data_root: Path) -> dict:
    spec = yaml.safe_load(QUICKSTART.read_text())
    spec["output_dir"] = str(tmp_path / "run")
    spec["data"]["root"] = str(data_root)
    return spec


def test_quickstart_is_valid(tmp_path, data_root):
    from bias_ray.models.packaged import packaged_path

    spec = parse_spec(good(tmp_path, data_root))
    assert spec.grid_size == 1 * 2 * 4 * 3
    assert [b.name for b in spec.bias_type_specs] == ["gender"]
    assert len(spec.seeds) >= 3 and spec.training.mix_labels == "real"
    # the real models, found in their installed packages: SmolLM2's GGUF (converted before the run) and MiniLM
    assert spec.models.generator == str(packaged_path("packaged:smollm2-135m-instruct"))
    assert spec.models.student == str(packaged_path("packaged:all-minilm-l6-v2"))
    assert not spec.models.build_tiny_if_missing
    assert spec.evaluation.tasks == ["hatecheck"]  # MiniLM has no LM head: the LM tasks would be refused
    assert spec.bias_type("gender").groups  # catalog entries are expanded into data
    assert spec.output_dir.is_absolute()


def test_planted_control_is_the_quickstart_with_only_hateful_rows(tmp_path, data_root):
    """sweeps/planted.yaml differs from the quickstart only in its stances, and its top ratio is reachable."""
    planted = yaml.safe_load((QUICKSTART.parent / "planted.yaml").read_text())
    quick = yaml.safe_load(QUICKSTART.read_text())
    assert planted["generation"].pop("stances") == {"biased": 1.0}
    quick["generation"].pop("stances")
    assert len(planted["seeds"]) >= 5  # what it takes to detect the plant (docs/results.md)
    for key in ("name", "output_dir", "seeds"):
        planted.pop(key), quick.pop(key)
    assert planted == quick
    raw = yaml.safe_load((QUICKSTART.parent / "planted.yaml").read_text())
    raw["output_dir"], raw["data"]["root"] = str(tmp_path / "run"), str(data_root)
    from bias_ray.generate.prompts import planned_label_shares
    from bias_ray.mix.checks import check_planned_mixes

    spec = parse_spec(raw)
    check_planned_mixes(spec, planned_label_shares(spec))  # an all-hateful plan reaches ratio 0.5 with labels held


def test_label_balanced_recipe_is_the_tiny_model_quickstart_with_the_label_balance_held(tmp_path, data_root):
    """sweeps/label_balanced.yaml (the tiny local model, no package needed) holds the label balance at reachable
    ratios."""
    recipe = yaml.safe_load((QUICKSTART.parent / "label_balanced.yaml").read_text())
    assert recipe["training"]["mix_labels"] == "real" and recipe["models"]["build_tiny_if_missing"]
    raw = yaml.safe_load((QUICKSTART.parent / "label_balanced.yaml").read_text())
    raw["output_dir"], raw["data"]["root"] = str(tmp_path / "run"), str(data_root)
    spec = parse_spec(raw)
    from bias_ray.mix.checks import real_rows

    real = real_rows(spec.data.model_dump_json())
    assert max(spec.bias_ratios) <= real[real["split"] == "train"]["label"].mean()  # an all-hateful job reaches it


def _set(d: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[p]
    d[last] = value


def _del(d: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[p]
    del d[last]


BROKEN = [
    # (id, mutation, substrings the message must contain)
    ("unknown_key", lambda s: _set(s, "trainig", {}), ["trainig", "unknown key"]),
    ("nested_unknown_key", lambda s: _set(s, "training.lr", 0.1), ["training.lr", "unknown key"]),
    ("ratio_above_one", lambda s: _set(s, "bias_ratios", [0.0, 1.5]), ["bias_ratios", "1.5", "[0, 1]"]),
    ("ratio_negative", lambda s: _set(s, "bias_ratios", [-0.1]), ["bias_ratios", "-0.1", "[0, 1]"]),
    ("unknown_bias_type", lambda s: _set(s, "bias_types", ["gender", "astrology"]), ["bias_types", "astrology",
                                                                                     "built-in"]),
    ("unknown_mitigation", lambda s: _set(s, "mitigations", ["none", "magic"]), ["mitigations", "magic", "allowed"]),
    ("unknown_engine", lambda s: _set(s, "generation.engine", "gpt9"), ["generation.engine", "gpt9", "allowed"]),
    ("empty_ratios", lambda s: _set(s, "bias_ratios", []), ["bias_ratios", "at least 1"]),
    ("empty_seeds", lambda s: _set(s, "seeds", []), ["seeds", "at least 1"]),
    ("unknown_scheduler", lambda s: _set(s, "scheduler.name", "fifo9"), ["scheduler.name", "fifo9", "asha"]),
    ("bad_mode", lambda s: _set(s, "scheduler.mode", "biggest"), ["scheduler.mode", "biggest"]),
    ("negative_lr", lambda s: _set(s, "training.learning_rate", -1), ["training.learning_rate", "greater than 0"]),
    ("missing_models", lambda s: _del(s, "models"), ["models", "required"]),
    ("missing_data_root", lambda s: _set(s, "data.root", "/nonexistent/data"), ["data.root", "/nonexistent/data",
                                                                               "BIAS_RAY_DATA"]),
    ("missing_student", lambda s: (_set(s, "models.build_tiny_if_missing", False),
                                   _set(s, "models.generator", "/"),  # exists; only the student is missing
                                   _set(s, "models.student", "/nonexistent/student")),
     ["models.student", "/nonexistent/student", "bias-ray models tiny"]),
    ("repeated_ratio", lambda s: _set(s, "bias_ratios", [0.5, 0.5]), ["bias_ratios", "repeat"]),
    ("bad_stance", lambda s: _set(s, "generation.stances", {"angry": 1.0}), ["generation.stances", "angry"]),
    ("bad_name", lambda s: _set(s, "name", "my sweep!"), ["name", "my sweep!"]),
    ("wrong_type", lambda s: _set(s, "training.epochs", "many"), ["training.epochs", "many"]),
]


@pytest.mark.parametrize("case,mutate,expected", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_specs_give_clear_errors(tmp_path, data_root, case, mutate, expected):
    spec = good(tmp_path, data_root)
    mutate(spec)
    with pytest.raises(SpecError) as err:
        parse_spec(spec, source="broken.yaml")
    message = str(err.value)
    assert message.startswith("broken.yaml")
    for part in expected:
        assert part in message, f"{case}: {part!r} not in:\n{message}"


def test_broken_spec_messages_are_distinct(tmp_path, data_root):
    messages = set()
    for _, mutate, _ in BROKEN:
        spec = good(tmp_path, data_root)
        mutate(spec)
        with pytest.raises(SpecError) as err:
            parse_spec(spec)
        messages.add(str(err.value))
    assert len(messages) == len(BROKEN)


def test_file_level_errors(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match="top level must be a mapping"):
        load_spec(bad)


def test_validate_command_exit_codes(tmp_path, data_root):
    from typer.testing import CliRunner

    from bias_ray.cli import app

    spec = good(tmp_path, data_root)
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(spec))
    ok = CliRunner().invoke(app, ["validate", str(path)])
    assert ok.exit_code == 0, ok.output
    assert "24 trials" in " ".join(ok.output.split())
    spec["bias_ratios"] = [2.0]
    path.write_text(yaml.safe_dump(spec))
    bad = CliRunner().invoke(app, ["validate", str(path)])
    assert bad.exit_code == 2
    assert "bias_ratios" in bad.output


def test_cpu_study_is_the_quickstart_over_two_bias_types_four_ratios_and_five_seeds(tmp_path, data_root):
    from bias_ray.generate.prompts import planned_label_shares
    from bias_ray.mix.checks import check_planned_mixes

    study = yaml.safe_load((QUICKSTART.parent / "cpu_study.yaml").read_text())
    quick = yaml.safe_load(QUICKSTART.read_text())
    assert study["bias_types"] == ["gender", "race"] and study["bias_ratios"] == [0.0, 0.25, 0.5, 0.9]
    assert len(study["seeds"]) >= 5 and len(study["mitigations"]) == 4
    assert study["generation"].pop("samples_per_bias_type") >= 0.9 * study["training"]["train_size"]
    quick["generation"].pop("samples_per_bias_type")
    for key in ("name", "output_dir", "bias_types", "bias_ratios", "seeds"):
        study.pop(key), quick.pop(key)
    assert study == quick
    raw = yaml.safe_load((QUICKSTART.parent / "cpu_study.yaml").read_text())
    raw["output_dir"], raw["data"]["root"] = str(tmp_path / "run"), str(data_root)
    spec = parse_spec(raw)
    assert spec.grid_size == 160
    check_planned_mixes(spec, planned_label_shares(spec))  # 0.9 is reachable with the label shares held
