"""The sweep spec: one YAML file, validated by pydantic, is the single source of truth for a run.

Every command loads the spec through :func:`load_spec`, which rejects a bad spec before any work
starts with a :class:`SpecError` that names the field path, the bad value and what is allowed.
Relative paths in a spec resolve against the current working directory.

The package: :mod:`~bias_ray.spec.schema` (the pydantic models and the checks of their content),
:mod:`~bias_ray.spec.checks` (the checks that read files: prompt template, task data, data folder, models) and
:mod:`~bias_ray.spec.layout` (the run folder's layout, :class:`RunLayout`); parsing, loading and
dumping are here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bias_ray.spec.checks import (
    check_models,
    check_paths,
    model_checks,
    model_fields,
    raise_all,
    raw_file_problems,
    resolve_paths,
    template_problems,
)
from bias_ray.spec.layout import RunLayout
from bias_ray.spec.schema import (
    DATA_COLUMNS,
    DEFAULT_REFUSALS,
    FRAMINGS_TEMPLATE,
    GRID_AXES,
    PACKAGE_DIR,
    RESOURCES,
    SCHEDULER_NAMES,
    STANCES,
    AnalysisSpec,
    BiasType,
    CarrySpec,
    DataSpec,
    EvaluationSpec,
    GenerationSpec,
    MitigationSpec,
    ModelsSpec,
    QualitySpec,
    ResourcesSpec,
    RoundsSpec,
    SchedulerSpec,
    SpecError,
    SweepSpec,
    TrackingSpec,
    TrainingSpec,
    bias_type_catalog,
    default_data_root,
    default_encoder_path,
    serves_model_by_name,
)

__all__ = [
    "DATA_COLUMNS", "DEFAULT_REFUSALS", "FRAMINGS_TEMPLATE", "GRID_AXES", "PACKAGE_DIR", "RESOURCES",
    "SCHEDULER_NAMES", "STANCES", "AnalysisSpec", "BiasType", "CarrySpec", "DataSpec", "EvaluationSpec",
    "GenerationSpec", "MitigationSpec", "ModelsSpec", "QualitySpec", "ResourcesSpec", "RoundsSpec", "RunLayout",
    "SchedulerSpec", "SpecError", "SweepSpec", "TrackingSpec", "TrainingSpec", "bias_type_catalog", "check_models",
    "check_paths", "default_data_root", "default_encoder_path", "dump_spec", "load_spec", "model_checks",
    "model_fields", "parse_spec", "resolve_paths", "round_spec", "serves_model_by_name",
]


def _format_errors(source: str, err: ValidationError, extra: list[str] | None = None) -> str:
    extra = extra or []
    errors = err.errors()
    # a list of `name | {name, params}` fails both ways; the plain-string branch's "not a string" is noise
    # beside the mapping branch's own error, and union tags (str, function-after[...]) are not spec paths
    def path(e: dict) -> tuple:
        return tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float"))))
    detailed = {path(e)[:2] for e in errors if e["type"] != "string_type"}
    errors = [e for e in errors if not (e["type"] == "string_type" and path(e)[:2] in detailed and len(e["loc"]) > 2)]
    lines = [f"{source}: the sweep spec is invalid ({len(errors) + len(extra)} problem(s)):"]
    for e in errors:
        loc = ".".join(str(p) for p in path(e)) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling against the documented spec fields"
        elif e["type"] == "missing":
            msg = "required field is missing"
        value = e.get("input")
        shown = "" if e["type"] == "missing" or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  - {loc}: {msg}{shown}")
    lines += [f"  - {p}" for p in extra]
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "spec", check_files: bool = True) -> SweepSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the top level must be a mapping of spec fields, got {type(data).__name__}")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        extra = raw_file_problems(data) if check_files else []
        raise SpecError(_format_errors(source, err, extra)) from None
    resolve_paths(spec)
    raise_all(template_problems(spec), source, "the sweep spec is invalid")
    if check_files:
        check_paths(spec, source)
    return spec


def load_spec(path: str | Path, check_files: bool = True) -> SweepSpec:
    """Read and validate a YAML sweep spec."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file; pass the path of a YAML spec such as sweeps/quickstart.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    return parse_spec(data, str(path), check_files)


def dump_spec(spec: SweepSpec) -> dict[str, Any]:
    """A plain dict of the spec, JSON/YAML friendly, that :func:`parse_spec` reads back."""
    return spec.model_dump(mode="json")


def round_spec(spec: SweepSpec, k: int, generator: str) -> SweepSpec:
    """The spec of round ``k`` >= 2: ``spec``, with round k-1's carried student as the generator, its own
    folder and name, and one round (a round never starts rounds of its own)."""
    data = dump_spec(spec)
    data.update(name=f"{spec.name}-round{k}", output_dir=str(spec.round_dir(k)))
    data["models"]["generator"] = str(generator)
    data["rounds"] = {"count": 1}
    return parse_spec(data, f"round {k} of {spec.name}", check_files=False)
