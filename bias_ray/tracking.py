"""Weights & Biases, in one place: the mode, quiet runs, and the per-trial Tune callback.

Generation, the sweep and the report all log through here, so W&B is configured once: ``auto``
picks online or offline, runs never print banners to the terminal (they go to W&B's own files
under ``<output_dir>/wandb``), and ``wandb.init`` gets the current ``reinit`` API.
"""

from __future__ import annotations

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


def cell_tags(config: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """W&B tags naming a trial's grid cell, e.g. ``bias_ratio=0.5``."""
    return [f"{k}={config[k]}" for k in keys if k in config]


def trial_callbacks(mode: str, folder: Path, project: str, group: str, tags: Sequence[str],
                    grid_keys: Sequence[str]) -> list:
    """One quiet W&B run per Tune trial, grouped by sweep name; config and tags = the grid cell."""
    if mode == "disabled":
        return []
    from ray.air.integrations.wandb import WandbLoggerCallback

    class CellTaggedWandb(WandbLoggerCallback):
        def _start_logging_actor(self, trial, exclude_results, **kwargs):
            kwargs["tags"] = [*tags, *cell_tags(trial.config, grid_keys)]
            super()._start_logging_actor(trial, exclude_results, **kwargs)

    quiet_wandb()
    os.environ["WANDB_MODE"] = mode  # without it Ray's callback demands an API key even offline
    folder.mkdir(parents=True, exist_ok=True)
    return [CellTaggedWandb(project=project, group=group, mode=mode, dir=str(folder), excludes=["cpus"],
                            log_config=False, reinit=REINIT, settings=_settings())]
