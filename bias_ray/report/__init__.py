"""The report: tables and plots of a finished sweep, written under ``<run_dir>/report``."""

from bias_ray.report.build import build_report, log_to_wandb

__all__ = ["build_report", "log_to_wandb"]
