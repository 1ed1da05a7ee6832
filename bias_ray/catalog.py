"""Built-in resources every layer may read (bias types, the task listing), with no import of the spec or any stage.

The data loaders and the spec both need the bias-type catalog; keeping it here lets the spec
import the data layer's checks without an import circle.

The parsed task listing (``resources/tasks.yaml``) is read with no task module imported: metric
directions, training and the report read the listing; only running a task needs its module, so the
listing lives apart from the task registry (no import circle through the task modules).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
RESOURCES = PACKAGE_DIR / "resources"


@cache
def bias_type_catalog() -> dict[str, dict[str, Any]]:
    """The built-in bias types (data in ``resources/bias_types.yaml``)."""
    with open(RESOURCES / "bias_types.yaml") as f:
        return yaml.safe_load(f)["bias_types"]


TASKS_FILE = RESOURCES / "tasks.yaml"


@cache
def task_listing() -> dict[str, Any]:
    """The parsed ``resources/tasks.yaml``: task entries and the group phrases for prompts, with the entries of
    your own plug-ins' ``tasks.yaml`` (beside each plug-in module, :mod:`bias_ray.registry`) added."""
    with open(TASKS_FILE) as f:
        listing = yaml.safe_load(f)
    for extra in plugin_listings():
        clash = sorted(set(extra.get("tasks") or {}) & set(listing["tasks"]))
        if clash:
            raise ValueError(f"plug-in task listing {extra['_file']} names task(s) {clash}, which bias-ray has; "
                             "rename them")
        listing["tasks"].update(extra.get("tasks") or {})
    return listing


def plugin_listings() -> list[dict[str, Any]]:
    """The ``tasks.yaml`` beside each of your plug-in modules (found without importing them)."""
    import importlib.util

    from bias_ray.registry import external_plugin_modules

    out = []
    for module in external_plugin_modules():
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):  # not importable: the registries name it when they import it
            continue
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        listing = origin.parent / "tasks.yaml" if origin is not None else None
        if listing is not None and listing.is_file() and str(listing) not in [o["_file"] for o in out]:
            with open(listing) as f:  # one per folder, however many of its modules are plug-ins
                out.append({**(yaml.safe_load(f) or {}), "_file": str(listing)})
    return out


def lm_tasks(names: list[str]) -> list[str]:
    """Of ``names``, the tasks that score a causal LM (every kind but ``classifier``, which needs only a classifier)."""
    entries = task_listing()["tasks"]
    return [n for n in names if entries.get(n, {}).get("kind") != "classifier"]
