"""ASHA vs no scheduler on the same grid with the tiny student: compute used and the best config.

Runs the real pipeline (tiny local generator and student, real ToxiGen data): one generation, then
the grid twice, once with ``scheduler: none`` and once with ASHA. Prints the Tune iterations
(evaluations) ASHA used as a share of the full grid's and whether both runs pick the same best
config (by the scheduler metric of each trial's last report). Target: <= 40% with the same best.

    PYTHONPATH=. python bench/early_stop.py [--out runs/bench_early_stop] [--grace-period 1] [--reduction-factor 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from bias_ray.generate.pipeline import generate
from bias_ray.models import ensure_model
from bias_ray.runtime import init_ray
from bias_ray.spec import default_data_root, parse_spec
from bias_ray.train.sweep import GRID_KEYS, early_stop_summary, run_sweep


def bench_spec(out: Path, scheduler: dict) -> dict:
    """5 bias ratios x 2 mitigations x 1 seed = 10 trials of 40 steps, evaluated every 4 steps."""
    return {
        "name": f"early_stop_{scheduler['name']}",
        "output_dir": str(out / scheduler["name"]),
        "models": {"generator": str(out / "tiny"), "student": str(out / "tiny"), "build_tiny_if_missing": True},
        "bias_types": ["religion"],
        "bias_ratios": [0.0, 0.25, 0.5, 0.75, 0.9],
        "mitigations": ["none", "token"],
        "seeds": [0],
        "generation": {"samples_per_bias_type": 120, "max_new_tokens": 16, "batch_size": 40},
        "training": {"train_size": 320, "epochs": 2, "batch_size": 16, "learning_rate": 0.003, "eval_every": 4,
                     "max_eval_rows": 200},
        "scheduler": {"metric": "macro_f1", "mode": "max", **scheduler},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1},
        "tracking": {"wandb": "disabled"},
        "evaluation": {"tasks": []},  # the scheduler compares trials on the primary metric alone
    }


def best_config(table) -> dict:
    row = table.sort_values("macro_f1", ascending=False).iloc[0]
    return {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in GRID_KEYS} | {
        "macro_f1": float(row["macro_f1"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_early_stop"))
    ap.add_argument("--grace-period", type=int, default=1)
    ap.add_argument("--reduction-factor", type=float, default=3)
    args = ap.parse_args()
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    init_ray()

    specs = {name: parse_spec(bench_spec(out, sched), check_files=False) for name, sched in {
        "none": {"name": "none"},
        "asha": {"name": "asha", "grace_period": args.grace_period, "reduction_factor": args.reduction_factor},
    }.items()}
    ensure_model(specs["none"].models.student, default_data_root(), True)
    generate(specs["none"])
    shutil.copytree(specs["none"].augmented_dir, specs["asha"].augmented_dir)

    tables, walls = {}, {}
    for name, spec in specs.items():
        started = time.time()
        tables[name] = run_sweep(spec)
        walls[name] = time.time() - started

    full = early_stop_summary(tables["none"])
    asha = early_stop_summary(tables["asha"])
    share = asha["iterations_used"] / full["iterations_used"]
    best = {name: best_config(t) for name, t in tables.items()}
    same = all(best["none"][k] == best["asha"][k] for k in GRID_KEYS)
    figures = {
        "trials": full["trials"],
        "iterations_full_grid": full["iterations_used"],
        "iterations_asha": asha["iterations_used"],
        "asha_share_of_full": round(share, 4),
        "asha_stopped_early": asha["stopped_early"],
        "steps_full_grid": full["steps_used"],
        "steps_asha": asha["steps_used"],
        "wall_s_full_grid": round(walls["none"], 1),
        "wall_s_asha": round(walls["asha"], 1),
        "best_full_grid": best["none"],
        "best_asha": best["asha"],
        "same_best_config": same,
        "target_met": bool(share <= 0.40 and same),
    }
    (out / "early_stop.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    print(f"ASHA used {share:.1%} of the full grid's trial-iterations ({asha['iterations_used']}/"
          f"{full['iterations_used']}), stopped {asha['stopped_early']}/{asha['trials']} trials early; "
          f"same best config: {same}; target (<= 40% and same best): {'met' if figures['target_met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
