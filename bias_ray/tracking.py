"""Weights & Biases, in one place: the mode, quiet runs, and the per-trial runs of a sweep.

Generation, the sweep and the report all log through here, so W&B is configured once: ``auto``
picks online or offline, runs never print banners to the terminal (they go to W&B's own files
under ``<output_dir>/wandb``), and ``wandb.init`` gets the current ``reinit`` API.
"""

from __future__ import annotations

import functools
import hashlib
import netrc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WANDB_MODES = ("offline", "online", "disabled", "auto")
REINIT = "finish_previous"  # wandb>=0.19: a new run in the same process ends the previous one


def wandb_mode(setting: str) -> str:
    """``auto`` is online when the user is logged in (API key or netrc entry), else offline."""
    if setting not in WANDB_MODES:
        raise ValueError(f"unknown W&B mode {setting!r}; use one of {', '.join(WANDB_MODES)}")
    if setting != "auto":
        return setting
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    return "offline"


def quiet_wandb() -> None:
    """No W&B banners or sync hints on the terminal (this process and the Ray workers it starts)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")


def _settings():
    import wandb

    return wandb.Settings(silent=True, console="off")


def start_run(mode: str, folder: Path, project: str, name: str, job_type: str, *,
              group: str | None = None, tags: Sequence[str] = (), config: dict[str, Any] | None = None):
    """A quiet W&B run logging under ``folder`` (created); the caller ``finish()``-es it."""
    quiet_wandb()
    import wandb

    folder.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=project, group=group, name=name, job_type=job_type, mode=mode, dir=str(folder),
                      tags=list(tags), config=config or {}, reinit=REINIT, settings=_settings())


WANDB_TAG_MAX = 64  # W&B refuses a run with a longer tag


def cell_tags(config: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """W&B tags naming a trial's grid cell, e.g. ``bias_ratio=0.5``.

    A tag over W&B's 64 characters (a mitigation with its parameters) is cut and given a hash of
    the whole, so two long values stay two tags; the run's config holds the full value.
    """
    tags = []
    for key in keys:
        if key in config:
            tag = f"{key}={config[key]}"
            if len(tag) > WANDB_TAG_MAX:
                tag = f"{tag[:WANDB_TAG_MAX - 9]}~{hashlib.sha1(tag.encode()).hexdigest()[:8]}"
            tags.append(tag)
    return tags


def trial_callbacks(mode: str, folder: Path, project: str, group: str, tags: Sequence[str],
                    grid_keys: Sequence[str]) -> list:
    """One quiet W&B run per Tune trial, grouped by sweep name; config and tags = the grid cell.

    The runs live in the sweep's driver (``_TrialRuns``), not in a logging actor and a queue
    actor per trial as Ray's ``WandbLoggerCallback`` starts them: two fresh processes a trial,
    each importing Ray and W&B, cost about 3-4 s of a 2-core machine per trial and nearly
    doubled a small sweep's wall time; a run in the driver costs about 0.15 s to start, on a
    thread of its own.
    """
    if mode == "disabled":
        return []
    quiet_wandb()
    os.environ["WANDB_MODE"] = mode
    folder.mkdir(parents=True, exist_ok=True)
    return [_trial_runs_class()(mode, folder, project, group, tags, grid_keys)]


@functools.cache
def _trial_runs_class() -> type:
    """The callback class, built on first use: importing this module does not import Ray Tune."""
    from ray.tune.logger import LoggerCallback

    class _TrialRuns(LoggerCallback):
        """A W&B run per trial, opened when the trial starts and finished when it ends.

        W&B's calls run on one background thread of this process, in order, so Tune's loop never
        waits on them (a run's start is ~0.15 s, the first one's ~1.3 s with W&B's import and
        service); the sweep's end waits for them all. A failed trial's run stays open: Tune may
        retry the trial, and the retry logs into the same run (``id`` = the trial id); runs still
        open when the sweep ends finish as failed.
        """

        def __init__(self, mode: str, folder: Path, project: str, group: str, tags: Sequence[str],
                     grid_keys: Sequence[str]) -> None:
            self.mode, self.folder, self.project, self.group = mode, Path(folder), project, group
            self.tags, self.grid_keys = list(tags), list(grid_keys)
            self.open: set[str] = set()  # trials with a run (Tune's thread)
            self.runs: dict[str, Any] = {}  # their W&B runs (the W&B thread)
            self.pool = None

        def __getstate__(self) -> dict:  # Tune saves its callbacks with the experiment: no live runs
            return {**self.__dict__, "open": set(), "runs": {}, "pool": None}

        def _submit(self, fn, *args) -> None:
            if self.pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wandb-trial-runs")
            self.pool.submit(fn, *args).add_done_callback(_warn_on_error)

        def _start(self, trial_id: str, name: str, config: dict[str, Any], tags: list[str]) -> None:
            import wandb

            self.runs[trial_id] = wandb.init(
                id=trial_id, name=name, group=self.group, project=self.project, mode=self.mode,
                dir=str(self.folder), tags=tags, config=config, resume="allow", reinit="create_new",
                settings=_settings())

        def _log(self, trial_id: str, metrics: dict[str, float]) -> None:
            if trial_id in self.runs:
                self.runs[trial_id].log(metrics)

        def _finish(self, trial_id: str, exit_code: int) -> None:
            if trial_id in self.runs:
                self.runs.pop(trial_id).finish(exit_code=exit_code)

        def log_trial_start(self, trial) -> None:
            if trial.trial_id in self.open:  # a retried trial: same run
                return
            self.open.add(trial.trial_id)
            config = {k: v for k, v in trial.config.items() if v is None or isinstance(v, (bool, int, float, str))}
            self._submit(self._start, trial.trial_id, str(trial), {**config, "trial_id": trial.trial_id},
                         [*self.tags, *cell_tags(trial.config, self.grid_keys)])

        def log_trial_result(self, iteration: int, trial, result: dict) -> None:
            self.log_trial_start(trial)  # a no-op once the run is open
            self._submit(self._log, trial.trial_id, trial_metrics(result))

        def log_trial_end(self, trial, failed: bool = False) -> None:
            if not failed and trial.trial_id in self.open:
                self.open.discard(trial.trial_id)
                self._submit(self._finish, trial.trial_id, 0)

        def on_experiment_end(self, trials, **info) -> None:
            for trial_id in sorted(self.open):
                self._submit(self._finish, trial_id, 1)
            self.open = set()
            if self.pool is not None:
                self.pool.shutdown(wait=True)
                self.pool = None

    return _TrialRuns


def _warn_on_error(future) -> None:
    """A W&B call that failed is a warning in the log, never the end of the sweep."""
    if future.exception() is not None:
        import logging

        logging.getLogger(__name__).warning("W&B logging failed: %s", future.exception())


def trial_metrics(result: dict[str, Any]) -> dict[str, float]:
    """What a W&B trial run logs of a Tune result: its numbers (config and bookkeeping left out)."""
    skip = {"config", "done", "should_checkpoint", "cpus", "pid", "date", "timestamp", "node_ip", "hostname"}
    return {k: v for k, v in result.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}
