"""ASHA vs no scheduler on the same grid with the tiny student: compute, wall time and the best config.

Runs the real pipeline (tiny local generator and student, real ToxiGen data): one generation, then
for each of ``--seeds`` the grid twice, once with ``scheduler: none`` and once with ASHA. Prints the
Tune iterations (evaluations) ASHA used as a share of the full grid's, its wall time as a share of
the full grid's, and whether both runs pick the same best config (by the scheduler metric of each
trial's last report). Targets: iterations <= 40%, wall time <= 50%, same best, for every seed.

It also splits each trial's start-up into its parts: the time outside any trial (actor start,
Tune's bookkeeping between trials), imports in the trial's process, the data step and the model
load (the last two from the trial's own ``startup/*`` metrics).

    PYTHONPATH=. python bench/early_stop.py [--out runs/bench_early_stop] [--seeds 0 1 2] [--grace-period 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from bias_ray.generate.pipeline import generate
from bias_ray.models import ensure_model
from bias_ray.runtime import init_ray
from bias_ray.spec import default_data_root, parse_spec
from bias_ray.train.sweep import GRID_KEYS, early_stop_summary, run_sweep
from bias_ray.train.trainable import train_trial


def timed_trial_logging_to(log: Path):
    """``train_trial`` that appends its process's start-up parts to ``log`` (one JSON line per trial)."""

    def timed_trial(config, spec_dict, report=None):
        import psutil

        entered = time.time()
        seen = int(os.environ.get("BENCH_TRIALS_IN_THIS_PROCESS", "0")) + 1  # > 1: a reused actor
        os.environ["BENCH_TRIALS_IN_THIS_PROCESS"] = str(seen)
        clock = time.perf_counter()
        import peft  # noqa: F401  (what a fresh trial process imports before its first step)
        import torch  # noqa: F401
        import transformers  # noqa: F401

        imports_s = time.perf_counter() - clock
        record = {"pid": os.getpid(), "reused": seen > 1, "entered": entered,
                  "process_age_s": entered - psutil.Process().create_time(), "imports_s": imports_s,
                  "cell": {k: config[k] for k in GRID_KEYS}}
        try:
            train_trial(config, spec_dict, report)
        finally:
            record["left"] = time.time()
            with open(log, "a") as f:
                f.write(json.dumps(record) + "\n")

    return timed_trial


def bench_spec(out: Path, scheduler: dict, seed: int = 0, runs: Path | None = None) -> dict:
    """5 bias ratios x 2 mitigations x 1 seed = 10 trials of 40 steps, evaluated every 4 steps."""
    return {
        "name": f"early_stop_{scheduler['name']}",
        "output_dir": str((runs or out) / scheduler["name"]),
        "models": {"generator": str(out / "tiny"), "student": str(out / "tiny"), "build_tiny_if_missing": True},
        "bias_types": ["religion"],
        "bias_ratios": [0.0, 0.25, 0.5, 0.75, 0.9],
        "mitigations": ["none", "token"],
        "seeds": [seed],
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


def startup_parts(table, trial_log: Path, wall_s: float) -> dict:
    """Seconds per trial of each start-up part, and the sweep's time outside any trial."""
    records = [json.loads(line) for line in trial_log.read_text().splitlines()]
    inside = sum(r["left"] - r["entered"] for r in records)
    n = max(1, len(records))
    return {
        "trials": len(records),
        "fresh_processes": sum(not r["reused"] for r in records),
        "outside_trials_s_per_trial": round((wall_s - inside) / n, 3),  # actor start, Tune between trials
        "imports_s_per_trial": round(sum(r["imports_s"] for r in records) / n, 3),
        "data_s_per_trial": round(float(table["startup/data_s"].mean()), 3) if "startup/data_s" in table else None,
        "model_s_per_trial": round(float(table["startup/model_s"].mean()), 3) if "startup/model_s" in table else None,
    }


def run_seed(out: Path, seed: int, args) -> dict:
    """The full grid and ASHA for one seed, on the augmented set generated once under ``out``."""
    specs = {name: parse_spec(bench_spec(out, sched, seed, out / f"seed{seed}"), check_files=False) for name, sched in {
        "none": {"name": "none"},
        "asha": {"name": "asha", "grace_period": args.grace_period, "reduction_factor": args.reduction_factor},
    }.items()}
    tables, walls, parts = {}, {}, {}
    for name, spec in specs.items():
        shutil.copytree(out / "generated", spec.augmented_dir)
        log = out / f"seed{seed}" / f"{name}_trials.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.time()
        tables[name] = run_sweep(spec, trainable=timed_trial_logging_to(log))
        walls[name] = time.time() - started
        parts[name] = startup_parts(tables[name], log, walls[name])

    full = early_stop_summary(tables["none"])
    asha = early_stop_summary(tables["asha"])
    share = asha["iterations_used"] / full["iterations_used"]
    wall_share = walls["asha"] / walls["none"]
    best = {name: best_config(t) for name, t in tables.items()}
    same = all(best["none"][k] == best["asha"][k] for k in GRID_KEYS)
    return {
        "seed": seed,
        "trials": full["trials"],
        "iterations_full_grid": full["iterations_used"],
        "iterations_asha": asha["iterations_used"],
        "asha_share_of_full": round(share, 4),
        "asha_stopped_early": asha["stopped_early"],
        "steps_full_grid": full["steps_used"],
        "steps_asha": asha["steps_used"],
        "wall_s_full_grid": round(walls["none"], 1),
        "wall_s_asha": round(walls["asha"], 1),
        "asha_wall_share_of_full": round(wall_share, 4),
        "startup_full_grid": parts["none"],
        "startup_asha": parts["asha"],
        "best_full_grid": best["none"],
        "best_asha": best["asha"],
        "same_best_config": same,
        "target_met": bool(share <= 0.40 and wall_share <= 0.50 and same),
        "load_avg_after": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_early_stop"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one repetition per training seed")
    ap.add_argument("--grace-period", type=int, default=1)
    ap.add_argument("--reduction-factor", type=float, default=3)
    args = ap.parse_args()
    out = args.out.resolve()
    for old in out.glob("seed*"):
        shutil.rmtree(old)
    init_ray()

    gen_spec = parse_spec(bench_spec(out, {"name": "none"}), check_files=False)
    ensure_model(gen_spec.models.student, default_data_root(), True)
    generate(gen_spec)  # a finished job of the same settings under --out is reused as it is
    if not (out / "generated").exists():
        shutil.copytree(gen_spec.augmented_dir, out / "generated")

    runs = []
    for seed in args.seeds:
        runs.append(run_seed(out, seed, args))
        print(json.dumps(runs[-1], indent=2), flush=True)
    walls = [r["asha_wall_share_of_full"] for r in runs]
    iters = [r["asha_share_of_full"] for r in runs]
    figures = {"runs": runs, "asha_wall_share_mean": round(statistics.mean(walls), 4),
               "asha_wall_share_range": [min(walls), max(walls)],
               "asha_iteration_share_mean": round(statistics.mean(iters), 4),
               "same_best_every_seed": all(r["same_best_config"] for r in runs),
               "target_met_every_seed": all(r["target_met"] for r in runs)}
    (out / "early_stop.json").write_text(json.dumps(figures, indent=2))
    for r in runs:
        print(f"seed {r['seed']}: ASHA used {r['asha_share_of_full']:.1%} of the full grid's trial-iterations "
              f"({r['iterations_asha']}/{r['iterations_full_grid']}) and {r['asha_wall_share_of_full']:.1%} of its "
              f"wall time ({r['wall_s_asha']} s / {r['wall_s_full_grid']} s); same best config: "
              f"{r['same_best_config']}; target (<= 40% iterations, <= 50% wall, same best): "
              f"{'met' if r['target_met'] else 'NOT met'}")
        print(f"    start-up per trial, full grid: {r['startup_full_grid']}")
        print(f"    start-up per trial, ASHA:      {r['startup_asha']}")
    print(f"ASHA wall share over {len(runs)} seeds: mean {figures['asha_wall_share_mean']:.1%}, range "
          f"{min(walls):.1%}-{max(walls):.1%}; target met for every seed: {figures['target_met_every_seed']}")


if __name__ == "__main__":
    main()
