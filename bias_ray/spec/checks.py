"""The spec's checks that read files and the environment, run before any work: the task data, the data
folder, the prompt template, the model sources, and the absolute paths every Ray worker must see.

:mod:`bias_ray.spec.schema` validates a spec's content; these check what it names on this machine.
:func:`bias_ray.spec.parse_spec` runs them (``check_files``), and the CLI before a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bias_ray.spec.schema import SpecError, SweepSpec, serves_model_by_name


def _check_task_data(spec: SweepSpec, source: str) -> None:
    """Read the user's task data once, now: a bad file or a bias-type group it lacks stops the spec."""
    if spec.data.task == "toxigen":
        return
    from bias_ray.data.custom import DataError, load_task_data

    try:
        rows = load_task_data(spec.data)
    except DataError as err:
        raise SpecError(f"{source}: data: {err}") from None
    present = set(rows["group"])
    for bias in spec.bias_type_specs:
        if bias.framing:  # a framed template writes its own people: the real data need not name the groups
            continue
        absent = [g for g in bias.groups if g not in present]
        if absent:
            raise SpecError(
                f"{source}: bias_types: {bias.name!r} names group(s) {absent} that the task data "
                f"({spec.data.path}) has no row of; its groups: {', '.join(sorted(present))}. "
                "Define the bias type inline with your data's groups, e.g. {name: x, groups: [a, b]}"
            )


def _data_root_problem(root: Path, task: str) -> str | None:
    if not root.is_dir():
        return (f"data.root: folder {root} does not exist; set data.root in the spec or "
                "BIAS_RAY_DATA to the folder holding bbq/, crows_pairs/ and toxigen/")
    needed = {"toxigen": root / "toxigen" / "prompts"}
    if task in needed and not needed[task].is_dir():
        return f"data.root: {needed[task]} is missing; is {root} the data folder?"
    return None


def template_problems(spec: SweepSpec) -> list[str]:
    """The prompt template exists; with ``framings``, it has the spec's framings, dimensions and groups; with
    named classes (``data.labels``), each slot of a dimension names a class. A small YAML of the spec's own,
    so :func:`~bias_ray.spec.parse_spec` reads it always, with or without ``check_files``."""
    from bias_ray.framings import check_framings, read_template, slot_classes

    template = spec.generation.template
    if template is None:
        return []
    if not template.is_file():
        return [f"generation.template: prompt template {template} does not exist; give a YAML file like "
                "bias_ray/resources/prompts/toxigen_statements.yaml or leave template unset"]
    if not spec.framings:
        return []
    try:
        check_framings(template, spec.framings, spec.bias_type_specs)
        if spec.data.labels:
            framed = read_template(template)
            for dimension in dict.fromkeys(b.dimension_name for b in spec.bias_type_specs):
                slot_classes(framed, dimension, spec.data.labels)
    except ValueError as err:
        return [str(err)]
    return []


def raise_all(problems: list[str], source: str, heading: str = "the sweep spec cannot run") -> None:
    """One SpecError for every problem found: as it was for one, as a list for several."""
    if len(problems) == 1:
        raise SpecError(f"{source}: {problems[0]}")
    if problems:
        raise SpecError("\n".join([f"{source}: {heading} ({len(problems)} problems):",
                                   *[f"  - {p}" for p in problems]]))


def check_paths(spec: SweepSpec, source: str = "spec") -> None:
    """Files the run needs must exist before any work starts; every problem is named at once."""
    problems: list[str] = []
    if root_problem := _data_root_problem(spec.data.resolved_root, spec.data.task):
        problems.append(root_problem)
    try:
        _check_task_data(spec, source)
    except SpecError as err:
        problems.append(str(err).removeprefix(f"{source}: "))
    problems += model_checks(spec, here=True)[1]
    raise_all(problems, source)


def raw_file_problems(data: dict[str, Any]) -> list[str]:
    """File problems visible in a spec that does not validate: local model folders, the prompt template and
    the data folder.

    So one pass over a broken spec names its schema errors and its missing files together."""
    problems = []
    models = data.get("models") if isinstance(data.get("models"), dict) else {}
    for field in ("generator", "student"):
        value = models.get(field)
        if not isinstance(value, str) or models.get("build_tiny_if_missing") or not value.startswith(("/", ".", "~")):
            continue
        if field == "generator" and isinstance(data.get("generation"), dict) \
                and serves_model_by_name(data["generation"].get("engine")):
            continue
        from bias_ray.models.hub import check_source

        if (problem := check_source(value).problem) is not None:  # the words a valid spec's check uses
            problems.append(f"models.{field}: {problem}")
    generation = data.get("generation") if isinstance(data.get("generation"), dict) else {}
    template = generation.get("template")
    if isinstance(template, str) and not Path(template).expanduser().is_file():
        problems.append(f"generation.template: prompt template {template} does not exist")
    raw = data.get("data") if isinstance(data.get("data"), dict) else {}
    root = raw.get("root")
    if isinstance(root, str) and (problem := _data_root_problem(Path(root).expanduser().resolve(), "")):
        problems.append(problem)
    return problems


def resolve_paths(spec: SweepSpec) -> None:
    """Make every local path absolute now, so Ray workers (which run elsewhere) see the same files."""
    from bias_ray.models.hub import source_kind

    spec.output_dir = spec.output_dir.expanduser().resolve()
    if spec.generation.template is not None:
        spec.generation.template = spec.generation.template.expanduser().resolve()
    spec.data.root = spec.data.resolved_root
    data_is_local = spec.data.task == "huggingface" and source_kind(spec.data.path, False) == "folder"
    if spec.data.task == "file" or data_is_local:
        spec.data.path = str(Path(spec.data.path).expanduser().resolve())
    for field in ("generator", "student"):
        value = getattr(spec.models, field)
        if field == "generator" and serves_model_by_name(spec.generation.engine):
            continue  # the served model's name, not a path
        kind = source_kind(value, spec.models.build_tiny_if_missing)
        if kind == "packaged":
            from bias_ray.models.packaged import packaged_path, packaged_problem

            if packaged_problem(value) is None:  # else check_models names what to install
                value = str(packaged_path(value))
                kind = source_kind(value)
        if kind == "folder" or (kind == "gguf" and Path(value).expanduser().exists()):
            value = str(Path(value).expanduser().resolve())
        setattr(spec.models, field, value)


# ---------------------------------------------------------------- model sources (folder or hub id)
def model_fields(spec: SweepSpec) -> list[str]:
    """The model references this spec loads weights from (an http generator is a served name, not one)."""
    return ["student"] if serves_model_by_name(spec.generation.engine) else ["generator", "student"]


def check_models(spec: SweepSpec, source: str = "spec", here: bool = True) -> list[str]:
    """Say what each model reference is and check it as far as this machine can (see models/hub.py).

    ``here``: the run happens on this machine (missing folders, and hub ids missing from the cache
    in offline mode, are errors). Off (dry run, submission): those are noted as not checked.
    Returns one line per model, e.g. ``models.student: hub id owner/name (not checked: ...)``.
    """
    notes, problems = model_checks(spec, here)
    if problems:
        raise SpecError("\n".join([f"{source}: the sweep spec's models cannot be loaded:",
                                   *[f"  - {p}" for p in problems]]))
    return notes


def model_checks(spec: SweepSpec, here: bool = True) -> tuple[list[str], list[str]]:
    """(a note per model, a problem per model that cannot be loaded), each starting with its field path."""
    from bias_ray.models.hub import check_source

    notes, problems = [], []
    for field in ("generator", "student"):
        value = getattr(spec.models, field)
        if field not in model_fields(spec):
            notes.append(f"models.{field}: served model {value!r} (checked by the endpoint at run time)")
            continue
        found = check_source(value, spec.models.build_tiny_if_missing, here=here)
        notes.append(f"models.{field}: {found.note}")
        if found.problem:
            problems.append(f"models.{field}: {found.problem}")
    return notes, problems


