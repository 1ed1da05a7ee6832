"""Every problem of a spec at once (issue 22): schema errors and missing files in one error, each with its path."""

from __future__ import annotations

import pytest

from bias_ray.spec import SpecError, parse_spec


def spec_dict(tmp_path, **overrides) -> dict:
    d = {"name": "x", "output_dir": str(tmp_path / "run"),
         "models": {"generator": str(tmp_path / "no-generator"), "student": str(tmp_path / "no-student")},
         "data": {"root": str(tmp_path / "no-data")},
         "bias_types": ["gender"], "bias_ratios": [0.0, 0.5], "mitigations": ["none"]}
    d.update(overrides)
    return d


def test_three_mistakes_are_named_in_one_error(tmp_path):
    d = spec_dict(tmp_path, bias_ratios=[0.0, 1.5], mitigations=["none", "nonesuch"])
    with pytest.raises(SpecError) as err:
        parse_spec(d, "three.yaml")
    text = str(err.value)
    assert text.startswith("three.yaml: the sweep spec is invalid (5 problem(s)):")
    for line in ("  - bias_ratios: bias ratio 1.5 is outside [0, 1]", "  - mitigations.1.name: unknown mitigation",
                 f"  - models.generator: {tmp_path / 'no-generator'} does not exist",
                 f"  - models.student: {tmp_path / 'no-student'} does not exist",
                 f"  - data.root: folder {tmp_path / 'no-data'} does not exist"):
        assert line in text, line


def test_a_valid_schema_with_missing_files_lists_every_file(tmp_path):
    with pytest.raises(SpecError) as err:
        parse_spec(spec_dict(tmp_path), "files.yaml")
    lines = str(err.value).splitlines()
    assert lines[0] == "files.yaml: the sweep spec cannot run (3 problems):"
    assert lines[1].startswith(f"  - data.root: folder {tmp_path / 'no-data'} does not exist")
    assert lines[2].startswith(f"  - models.generator: {tmp_path / 'no-generator'} does not exist")
    assert lines[3].startswith(f"  - models.student: {tmp_path / 'no-student'} does not exist")


def test_one_problem_reads_as_before(tmp_path, data_root, tiny_model):
    d = spec_dict(tmp_path, data={"root": str(data_root)},
                  models={"generator": str(tiny_model), "student": str(tmp_path / "no-student")})
    with pytest.raises(SpecError) as err:
        parse_spec(d, "one.yaml")
    assert str(err.value).startswith(f"one.yaml: models.student: {tmp_path / 'no-student'} does not exist")
    assert parse_spec(spec_dict(tmp_path, data={"root": str(data_root)},
                                models={"generator": str(tiny_model), "student": str(tiny_model)}), "ok.yaml")
