"""Multi-round self-augmentation: one trial's fine-tuned student, merged, becomes the next round's generator.

The carried trial is ``rounds.carry`` (default: the first bias type, the highest ratio, the first
mitigation, the first seed). Its last checkpoint (Tune keeps one per trial) holds the trainable
weights; they are loaded into a fresh student, the LoRA adapters merged into the base weights
(``W' = W + (alpha / r) B A``, peft's ``merge_and_unload``), and the model and its tokenizer
saved as a plain transformers folder: any engine, on any node, loads it like any other model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bias_ray.spec import SpecError, SweepSpec
from bias_ray.train.sweep import GRID_KEYS, cell_key, expand_spec, experiment_path, same_cells
from bias_ray.train.trainable import STATE_FILE, build_mitigation, build_student

CARRIED_DIR = "carried_student"


def carried_checkpoint(spec: SweepSpec, cell: dict[str, Any]) -> Path:
    """The folder of the carried trial's last checkpoint; an error names the cell when there is none."""
    from ray.tune import ExperimentAnalysis

    trained = same_cells(spec).get(cell_key(cell))
    if trained is not None:  # trained once as another mitigation, the same weights (sweep.same_cells)
        cell = dict(zip(GRID_KEYS, trained))
    analysis = ExperimentAnalysis(experiment_path(spec))
    for trial in analysis.trials:
        if all(trial.config.get(k) == cell[k] for k in GRID_KEYS):
            if trial.checkpoint is None:
                break
            return Path(trial.checkpoint.path)
    raise SpecError(f"rounds: the carried trial {cell} has no checkpoint in {experiment_path(spec)}; "
                    "did it fail? Its error is in results.parquet; rerun the round or choose rounds.carry")


def carry_student(spec: SweepSpec, out_dir: Path | None = None) -> Path:
    """Merge the carried trial's student into ``out_dir`` (default ``<run_dir>/carried_student``); kept if done.

    Written under a temporary name and renamed, so a crash leaves either no folder or a whole one.
    """
    import torch

    out = Path(out_dir or spec.run_dir / CARRIED_DIR)
    if (out / "config.json").is_file():
        return out
    run_spec = expand_spec(spec)
    cell = spec.carried_cell([m.label for m in run_spec.mitigation_specs])
    state = torch.load(carried_checkpoint(spec, cell) / STATE_FILE, weights_only=False, map_location="cpu")
    mitigation = build_mitigation(run_spec, cell)
    student, model = build_student(run_spec, mitigation)
    missing = set(state["model"]) - set(model.state_dict())
    if missing:
        raise SpecError(f"rounds: the checkpoint of {cell} holds weights this student lacks: {sorted(missing)[:3]}")
    model.load_state_dict(state["model"], strict=False)
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model  # finetune: full
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)  # not a finished folder (no config.json): never read, replaced
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        merged.save_pretrained(tmp)
        student.tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
