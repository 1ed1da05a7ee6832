"""ASHA that compares like with like: successive halving per group of trials, with a noise margin.

Plain ASHA (Li et al., "A System for Massively Parallel Hyperparameter Tuning", 2020) compares
every trial at a rung with every trial that reached it before. Two things make that lose the
best config of a bias-ray grid (``bench/early_stop_signal.py`` measures both):

- **Learning curves of different shapes.** A mitigation can start slower and finish higher (the
  token mitigation trains its new tag embeddings from scratch), so at the first rungs it ranks
  below ``none`` although it ends above it. ``group_by: [mitigation]`` keeps one set of rungs per
  value of the grid keys named: a trial is compared only with trials of its own group.
- **Evaluation noise.** A metric on ``n`` held-out rows moves by about its standard error from
  one evaluation to the next; two trials whose values differ by less are not told apart by the
  data, and stopping one of them on that difference is a coin flip. ``stop_margin`` m stops a
  trial only when its value is worse than the rung's cutoff by more than m. For a rate (accuracy,
  macro-F1) on n rows the standard error of one value is at most ``0.5 / sqrt(n)``, of the
  difference of two ``sqrt(2) * 0.5 / sqrt(n) = 1 / sqrt(2 n)`` (0.05 at n = 200).

The rule at a rung, for a trial reaching milestone ``r`` first with value v (higher is better;
``mode: min`` negates): ``cutoff = quantile_{1 - 1/eta}(values recorded at r)``; stop when
``v < cutoff - m``; record v. Milestones are ``grace_period * eta**k < max_t`` (k = 0, 1, ...),
``eta`` the reduction factor, as in Ray's ``AsyncHyperBandScheduler`` with one bracket: with no
groups and m = 0 the decisions are Ray's own (tests/test_early_stop.py checks it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler


def rung_milestones(grace_period: int, max_t: int, reduction_factor: float) -> list[float]:
    """Milestones ``grace_period * eta**k``, as many as Ray's ASHA bracket makes, highest first."""
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return [grace_period * reduction_factor**k for k in reversed(range(count))]


class Rungs:
    """One group's rungs: the values recorded at each milestone and the stop rule (module docstring)."""

    def __init__(self, grace_period: int, max_t: int, reduction_factor: float, stop_margin: float = 0.0) -> None:
        self.reduction_factor = reduction_factor
        self.stop_margin = stop_margin
        self.recorded: list[tuple[float, dict[str, float]]] = [
            (m, {}) for m in rung_milestones(grace_period, max_t, reduction_factor)]

    def cutoff(self, values: dict[str, float]) -> float | None:
        if not values:
            return None
        return float(np.nanpercentile(list(values.values()), (1 - 1 / self.reduction_factor) * 100))

    def on_result(self, trial_id: str, time: float, value: float) -> str:
        """CONTINUE or STOP for ``trial_id`` reporting ``value`` (higher is better) at ``time``."""
        for milestone, values in self.recorded:
            if time < milestone or trial_id in values:
                continue
            cutoff = self.cutoff(values)
            values[trial_id] = value
            if cutoff is not None and value < cutoff - self.stop_margin:
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE
        return TrialScheduler.CONTINUE


class GroupedASHA(FIFOScheduler):
    """ASHA with one set of :class:`Rungs` per value of ``group_by`` (keys of the trial's config).

    Trials run in submission order (FIFO); a trial stops when its rung says so or at ``max_t``.
    """

    def __init__(self, max_t: int, grace_period: int = 1, reduction_factor: float = 3,
                 group_by: list[str] | None = None, stop_margin: float = 0.0,
                 time_attr: str = "training_iteration", metric: str | None = None, mode: str | None = None) -> None:
        super().__init__()
        if grace_period > max_t:
            raise ValueError(f"grace_period {grace_period} exceeds max_t {max_t}; lower scheduler.grace_period")
        self._max_t, self._grace_period, self._reduction_factor = max_t, grace_period, reduction_factor
        self._group_by, self._stop_margin, self._time_attr = list(group_by or []), stop_margin, time_attr
        self._metric, self._mode = metric, mode
        self._groups: dict[tuple, Rungs] = {}
        self._trial_group: dict[str, tuple] = {}
        self._num_stopped = 0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        return True

    def group_of(self, config: dict[str, Any]) -> tuple:
        return tuple(str(config.get(k)) for k in self._group_by)

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self._metric or self._mode not in ("max", "min"):
            raise ValueError(f"GroupedASHA needs a metric and a mode of max or min (got {self._metric!r}, "
                             f"{self._mode!r}); set scheduler.metric and scheduler.mode")
        group = self.group_of(trial.config)
        self._trial_group[trial.trial_id] = group
        if group not in self._groups:
            self._groups[group] = Rungs(self._grace_period, self._max_t, self._reduction_factor, self._stop_margin)

    def _decide(self, trial, result: dict) -> str:
        value = result[self._metric] * (1.0 if self._mode == "max" else -1.0)
        return self._groups[self._trial_group[trial.trial_id]].on_result(trial.trial_id, result[self._time_attr], value)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        action = TrialScheduler.STOP if result[self._time_attr] >= self._max_t else self._decide(trial, result)
        self._num_stopped += action == TrialScheduler.STOP
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result and self._time_attr in result and self._metric in result and trial.trial_id in self._trial_group:
            self._decide(trial, result)
        self._trial_group.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._trial_group.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return (f"Using GroupedASHA: {len(self._groups)} groups by {self._group_by or 'nothing'}, "
                f"stop margin {self._stop_margin}, num_stopped={self._num_stopped}")
