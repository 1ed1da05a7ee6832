"""The run folder's layout: one place that says where each stage writes and reads, from ``output_dir``.

Every stage and the report build their paths from a :class:`RunLayout` (``spec.layout``, or
``RunLayout(run_dir)`` for a finished run's folder), so a file is named once::

    <output_dir>/
      data/augmented/     the augmented-data store (bias_ray.augmented), with manifest.json
      tune/               Ray Tune's experiment (unless storage_path puts it elsewhere)
      results.parquet     one row per trial (and results.csv), spec.json, sweep_summary.json
      analysis/           the misalignment analysis
      report/             report.md, report.html and the figures
      wandb/              W&B's offline runs
      logs/               the libraries' log file
      rounds/round-k/     round k >= 2 of a multi-round run
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder."""

    run_dir: Path

    @property
    def augmented_dir(self) -> Path:
        return self.run_dir / "data" / "augmented"

    @property
    def manifest(self) -> Path:
        return self.augmented_dir / "manifest.json"

    @property
    def tune_dir(self) -> Path:
        return self.run_dir / "tune"

    @property
    def results_path(self) -> Path:
        return self.run_dir / "results.parquet"

    @property
    def spec_json(self) -> Path:
        return self.run_dir / "spec.json"

    @property
    def sweep_summary(self) -> Path:
        return self.run_dir / "sweep_summary.json"

    @property
    def analysis_dir(self) -> Path:
        return self.run_dir / "analysis"

    @property
    def report_dir(self) -> Path:
        return self.run_dir / "report"

    @property
    def wandb_dir(self) -> Path:
        return self.run_dir / "wandb"

    @property
    def rounds_dir(self) -> Path:
        return self.run_dir / "rounds"

    def round_dir(self, k: int) -> Path:
        """Round ``k``'s run folder: round 1 is this run's own; round k >= 2 ``rounds/round-k``."""
        return self.run_dir if k == 1 else self.rounds_dir / f"round-{k}"
