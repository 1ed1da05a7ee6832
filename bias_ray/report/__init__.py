"""The report: tables and plots of a finished sweep, written under ``<run_dir>/report``."""

from bias_ray.report.build import build_report, final_lines, log_to_wandb
from bias_ray.report.run_files import record_spec

__all__ = ["build_report", "final_lines", "log_to_wandb", "record_spec"]
