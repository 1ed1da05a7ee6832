"""The downstream task registry: one module per task, listed in ``resources/tasks.yaml``.

A task turns the real data into rows (``rows``), gets the model's answers for them
(``predict``, through :class:`~bias_ray.measures.lm.LMScorer`, or for a task of kind ``classifier``
through the trial's trained classifier, ``TaskContext.classify``), and scores the answers
(``score``, a pure function of a prediction table so it can be tested on fixed predictions).
:func:`run_tasks` runs a list of tasks on a causal LM and returns flat ``task/<task>/<metric>`` keys.
"""

from __future__ import annotations

import importlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bias_ray.catalog import TASKS_FILE, lm_tasks, task_listing
from bias_ray.registry import TASKS
from bias_ray.spec import BiasType, EvaluationSpec, SweepSpec, bias_type_catalog, default_data_root

log = logging.getLogger(__name__)
Classify = Callable[[list[str]], np.ndarray]  # texts -> predicted labels (1 = hate), as the trial's classifier says
Score = Callable[[list[str]], np.ndarray]  # texts -> P(hate), as the trial's classifier says


@dataclass
class TaskContext:
    """What a task needs besides the model: where the data is, the settings, and which bias types."""

    data_root: Path
    settings: EvaluationSpec
    bias_types: list[BiasType]
    seed: int = 0
    test_fraction: float = 0.3  # the spec's, so ToxiGen rows a trial trained on never count as held out
    classify: Classify | None = field(default=None, repr=False)  # the trial's trained classifier, if any
    score: Score | None = field(default=None, repr=False)  # the same classifier's P(hate) per text, if any
    _classifier: Any = field(default=None, repr=False)

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(g for b in self.bias_types for g in b.groups))

    @property
    def classifier(self):
        """The stance classifier (trained on first use, cached per process)."""
        if self._classifier is None:
            from bias_ray.measures.classifier import toxigen_classifier

            s = self.settings
            self._classifier = toxigen_classifier(str(self.data_root), s.encoder, s.classifier_epochs,
                                                  s.classifier_l2, self.test_fraction)
        return self._classifier

    def cap(self, rows: pd.DataFrame, by: str) -> pd.DataFrame:
        """At most ``max_rows_per_task`` rows, spread evenly over ``by``; the same rows on every call."""
        return cap_rows(rows, by, self.settings.max_rows_per_task)


def cap_rows(rows: pd.DataFrame, by: str, limit: int | None) -> pd.DataFrame:
    """At most ``limit`` rows (None: all), spread evenly over ``by``; the same rows on every call."""
    if limit is None or len(rows) <= limit:
        return rows.reset_index(drop=True)
    per = max(1, limit // max(1, rows[by].nunique()))
    parts = [g.sample(n=min(len(g), per), random_state=0) for _, g in rows.groupby(by, sort=True)]
    return pd.concat(parts).reset_index(drop=True)


class Task(ABC):
    """One downstream task. Subclasses set ``name`` through the registry and implement three steps."""

    name = ""

    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self.options = options

    @abstractmethod
    def rows(self, ctx: TaskContext) -> pd.DataFrame:
        """The evaluation rows from the real data (empty when the bias types have none)."""

    @abstractmethod
    def predict(self, lm, rows: pd.DataFrame, ctx: TaskContext) -> pd.DataFrame:
        """``rows`` plus the model's answers."""

    @abstractmethod
    def score(self, predictions: pd.DataFrame) -> dict[str, float]:
        """Metrics (keys without the ``task/<name>/`` prefix) from a prediction table."""

    def check(self, ctx: TaskContext) -> list[str]:
        """Problems with the task's data, found before any work (a set that is not on this machine); none by
        default: the built-in tasks read ``data.root``, which the spec checks."""
        return []

    def run(self, lm, ctx: TaskContext) -> dict[str, float]:
        rows = self.rows(ctx)
        if rows.empty:
            log.warning("task %s: no rows for bias types %s in %s", self.name,
                        [b.name for b in ctx.bias_types], ctx.data_root)
            return {"n": 0.0}
        return self.score(self.predict(lm, rows, ctx))


def _import_task_modules() -> None:
    """Import every listed task's module. A plug-in's module may import this package while it runs (and find
    itself half imported), so whether each registered its task is checked when a task is built."""
    for entry in task_listing()["tasks"].values():
        # a built-in task's module is in this folder; a plug-in's names its own module (my_lab.tasks.fairness)
        module = entry["module"]
        importlib.import_module(module if "." in module else f"{__name__}.{module}")


def build_task(name: str, overrides: dict[str, Any] | None = None) -> Task:
    """The task ``name`` with its listed options, ``overrides`` (the spec's ``evaluation.task_options``) on top."""
    entry = task_listing()["tasks"].get(name)
    if entry is None:
        raise KeyError(f"task {name!r} is not listed in {TASKS_FILE}; available: {', '.join(TASKS.names())}")
    if name not in TASKS:
        raise ValueError(f"task {name!r} is listed but module {entry['module']!r} does not register it; add "
                         f"@TASKS.register({name!r}) to the task class")
    return TASKS.get(name)(name, **{**entry.get("options", {}), **(overrides or {})})


def _context(spec_or_settings: SweepSpec | EvaluationSpec | None, bias_types, data_root, seed) -> TaskContext:
    test_fraction = 0.3
    if isinstance(spec_or_settings, SweepSpec):
        test_fraction = spec_or_settings.data.test_fraction
        settings = spec_or_settings.evaluation
        data_root = data_root or spec_or_settings.data.resolved_root
        bias_types = bias_types if bias_types is not None else spec_or_settings.bias_type_specs
    else:
        settings = spec_or_settings or EvaluationSpec()
    if bias_types is None:
        bias_types = [BiasType(name=k, **v) for k, v in bias_type_catalog().items()]
    resolved = []
    for b in bias_types:
        if isinstance(b, BiasType):
            resolved.append(b)
        elif isinstance(spec_or_settings, SweepSpec) and b in [x.name for x in spec_or_settings.bias_type_specs]:
            resolved.append(spec_or_settings.bias_type(b))
        elif b in bias_type_catalog():
            resolved.append(BiasType(name=b, **bias_type_catalog()[b]))
        else:
            raise ValueError(f"unknown bias type {b!r}; built-in: {', '.join(bias_type_catalog())}")
    return TaskContext(Path(data_root or default_data_root()), settings, resolved, seed, test_fraction)


def run_tasks(
    model,
    tokenizer,
    task_names: list[str] | None = None,
    spec_or_settings: SweepSpec | EvaluationSpec | None = None,
    *,
    bias_types: list[str | BiasType] | None = None,
    data_root: str | Path | None = None,
    seed: int = 0,
    prompt_prefix: str = "",
    classify: Classify | None = None,
    score: Score | None = None,
) -> dict[str, float]:
    """Run downstream tasks on a causal LM; returns ``{"task/<task>/<metric>": value}``.

    ``task_names`` defaults to the settings' ``tasks``; ``bias_types`` (names or BiasType) defaults
    to the spec's bias types (all built-in ones without a spec); ``data_root`` to the spec's data
    root. ``prompt_prefix`` goes before every prompt (the token mitigation passes its ``"<real> "`` tag).
    ``classify(texts) -> labels`` (1 = hate) is the trained hate classifier that tasks of kind
    ``classifier`` (HateCheck) score; it must apply the mitigation's evaluation transform itself.
    ``score(texts) -> P(hate)`` is the same classifier's probabilities: HateCheck then takes its labels from them
    (argmax) and ranks cases by them (``target_excess_auc``). Without either such a task falls back to the causal
    LM (see the task's docstring); with one and only classifier tasks, ``model`` and ``tokenizer`` may be None.
    The model is left in the train/eval mode it came in, and the caller's RNG is untouched.
    """
    from bias_ray.measures.lm import LMScorer

    ctx = _context(spec_or_settings, bias_types, data_root, seed)
    ctx.classify, ctx.score = classify, score
    names = task_names if task_names is not None else ctx.settings.tasks
    tasks = [build_task(n, ctx.settings.task_options.get(n)) for n in names]  # a bad name fails before any work
    needs_lm = lm_tasks([t.name for t in tasks])
    if model is None and (needs_lm or (classify is None and score is None)):
        raise ValueError(f"run_tasks got no model; tasks {needs_lm or names} need a causal LM "
                         "(only classifier tasks run on `classify` alone)")
    lm = None if model is None else LMScorer(model, tokenizer, batch_size=ctx.settings.batch_size,
                                             prompt_prefix=prompt_prefix)
    out: dict[str, float] = {}
    for task in tasks:
        started = time.time()
        for key, value in task.run(lm, ctx).items():
            out[f"task/{task.name}/{key}"] = float(value)
        out[f"task/{task.name}/wall_s"] = time.time() - started
    return out


def check_task_data(spec: SweepSpec) -> list[str]:
    """Every problem of the spec's tasks' own data (:meth:`Task.check`), before any work starts."""
    ctx = _context(spec, None, None, 0)
    problems = []
    for name in spec.evaluation.tasks:
        problems += build_task(name, spec.evaluation.task_options.get(name)).check(ctx)
    return problems


_import_task_modules()

__all__ = ["TASKS", "Classify", "Task", "TaskContext", "build_task", "cap_rows", "check_task_data", "run_tasks",
           "task_listing"]
