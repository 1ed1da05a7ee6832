"""The parsed task listing (``resources/tasks.yaml``), with no task module imported.

Metric directions and the report read the listing; only running a task needs its module, so the
listing lives apart from the task registry (no import circle through the task modules).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml

from bias_ray.spec import RESOURCES

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
