"""Evaluation: the downstream task harness (``run_tasks``; the tasks in :mod:`bias_ray.evaluate.tasks`).

The instruments the tasks score with (metrics, encoder, stance classifier, LM scorer) are in
:mod:`bias_ray.measures`, a layer below the stages; the task listing is :func:`bias_ray.catalog.task_listing`.
"""

from __future__ import annotations


def run_tasks(*args, **kwargs) -> dict[str, float]:
    """See :func:`bias_ray.evaluate.tasks.run_tasks` (imported lazily: it pulls in the task modules)."""
    from bias_ray.evaluate.tasks import run_tasks as _run

    return _run(*args, **kwargs)


__all__ = ["run_tasks"]
