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
    """The parsed ``resources/tasks.yaml``: task entries and the group phrases for prompts."""
    with open(TASKS_FILE) as f:
        return yaml.safe_load(f)


def lm_tasks(names: list[str]) -> list[str]:
    """Of ``names``, the tasks that score a causal LM (every kind but ``classifier``, which needs only a classifier)."""
    entries = task_listing()["tasks"]
    return [n for n in names if entries.get(n, {}).get("kind") != "classifier"]
