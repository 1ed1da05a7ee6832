"""Evaluation: group-fairness metrics, downstream tasks (``run_tasks``) and the stance classifier."""

from __future__ import annotations


def run_tasks(*args, **kwargs) -> dict[str, float]:
    """See :func:`bias_ray.evaluate.tasks.run_tasks` (imported lazily: it pulls in the task modules)."""
    from bias_ray.evaluate.tasks import run_tasks as _run

    return _run(*args, **kwargs)


__all__ = ["run_tasks"]
