"""What the report reads from a run folder: results, the run's spec, the generation manifest, the analysis.

Every reader returns None (or an empty frame) for a file that is not there, so the report can
say in words what is missing instead of failing; only the results table is required.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bias_ray.files import write_json
from bias_ray.spec.layout import RunLayout

GRID = ["bias_type", "bias_ratio", "mitigation", "seed"]


def load_results(run_dir: Path) -> pd.DataFrame:
    """``results.parquet`` of a finished sweep, checked for the grid columns."""
    results = RunLayout(run_dir).results_path
    if not results.exists():
        raise FileNotFoundError(f"{results} is missing: run `bias-ray sweep SPEC` first")
    table = pd.read_parquet(results)
    if table.empty:
        raise ValueError(f"{results} holds no trials")
    missing = set(GRID[:3]) - set(table.columns)
    if missing:
        raise ValueError(f"{results} lacks columns {sorted(missing)}; was it written by `bias-ray sweep`?")
    if "seed" not in table:
        table["seed"] = 0
    return table


def record_spec(spec) -> Path:
    """Write the resolved spec into its run folder, so the report can say what ran (models, data, settings)."""
    from bias_ray.spec import dump_spec

    path = spec.layout.spec_json
    write_json(path, dump_spec(spec))
    return path


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def read_spec(run_dir: Path) -> dict[str, Any] | None:
    return _json(RunLayout(run_dir).spec_json)


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    return _json(RunLayout(run_dir).manifest)


@dataclass
class Analysis:
    """``<run_dir>/analysis`` as ``bias-ray analyze`` leaves it (summary None when it has not run)."""

    summary: pd.DataFrame | None
    images: list[Path] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # analysis.json: wall time, rows sampled
    probes: pd.DataFrame | None = None  # group_probes.csv: group shares of texts from neutral prompts


def read_analysis(run_dir: Path) -> Analysis:
    folder = RunLayout(run_dir).analysis_dir
    if not (folder / "summary.csv").is_file():
        return Analysis(None)
    probes = folder / "group_probes.csv"
    return Analysis(pd.read_csv(folder / "summary.csv"), sorted(folder.glob("misalignment_*.png")),
                    _json(folder / "analysis.json") or {}, pd.read_csv(probes) if probes.is_file() else None)


def analysis_enabled(spec: dict[str, Any] | None) -> bool:
    """Whether the run's spec asks for the misalignment analysis (true when the spec is unknown)."""
    return bool(((spec or {}).get("analysis") or {}).get("enabled", True))


def generator_measures(manifest: dict[str, Any] | None) -> pd.DataFrame | None:
    """The manifest's ``generator_measures`` per bias type, group and stance; None when it has none."""
    rows = (manifest or {}).get("generator_measures")
    if not rows:
        return None
    cols = ["bias_type", "group", "stance", "kept", "names_group_share", "hate_share"]
    frame = pd.DataFrame(rows)
    return frame[[c for c in cols if c in frame]].sort_values(
        [c for c in ("bias_type", "group", "stance") if c in frame]).reset_index(drop=True)
