"""Steps per second of one trial on 1, 2 and 4 Ray Train workers at the same global batch (issue 23).

Each configuration runs the same one-cell sweep (ratio 0, mitigation none, the real rows only, so no
generation is needed) through ``bias-ray``'s own path: one worker is the ordinary Tune trial; W > 1 is a
Ray Train run of W workers (gloo on the CPU). The figure is training steps per second inside the trial
(``(step - start_step) / trial_wall_s`` at its last report: the loop and its one evaluation, not the start-up),
and the ratio to one worker; the trial's whole wall time (start-up included) is printed beside it.

On a 2-core machine, 2 workers of 1 CPU each against 1 worker of 2 CPUs measures the cost of splitting a step
(an all-reduce per step, two smaller matrix products), and 4 workers oversubscribe the cores; on GPUs (one
GPU per worker) the same script measures real scaling: ``--gpus-per-worker 1``.

``--fsdp`` shards the student over the workers of every W > 1 run (``training.fsdp``): each worker then also
evaluates, and all-gathers every block's weights for its forward and backward.

    python bench/trial_scaling.py --student PATH [--workers 1 2 4] [--train-size 512] [--batch-size 32] [--fsdp]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def run(workers: int, args, work: Path, generator: Path) -> dict:
    import shutil

    from bias_ray.generate.pipeline import generate
    from bias_ray.spec import default_data_root, parse_spec
    from bias_ray.train.sweep import run_sweep

    cpus = args.cpus
    spec = parse_spec({
        "name": f"scaling-{workers}",
        "output_dir": str(work / f"w{workers}"),
        "models": {"generator": str(generator), "student": str(args.student)},
        "data": {"root": str(args.data_root or default_data_root())},
        "bias_types": ["gender"], "bias_ratios": [0.0], "mitigations": ["none"], "seeds": [0],
        "training": {"train_size": args.train_size, "epochs": 1, "batch_size": args.batch_size,
                     "eval_every": 10_000, "max_eval_rows": 64, "max_length": args.max_length,
                     "student_kind": "seq_cls", "fsdp": bool(args.fsdp and workers > 1)},
        "evaluation": {"tasks": []},
        "resources": {"cpus_per_trial": cpus, "gpus_per_trial": args.gpus_per_worker * workers,
                      "workers_per_trial": workers, "max_concurrent_trials": 1},
        "tracking": {"wandb": "disabled"},
        "generation": {"samples_per_bias_type": 8, "max_new_tokens": 4, "batch_size": 8},
    }, check_files=False)
    # a sweep reads a finished generation job even at ratio 0: a few rows from the tiny model, made once
    if not (work / "augmented").exists():
        shutil.copytree(generate(spec, progress=False), work / "augmented")
    shutil.copytree(work / "augmented", spec.augmented_dir, dirs_exist_ok=True)
    started = time.perf_counter()
    table = run_sweep(spec, verbose=0)
    wall = time.perf_counter() - started
    row = table.iloc[0]
    steps = float(row["step"] - row["start_step"])
    return {"workers": workers, "fsdp": bool(args.fsdp and workers > 1), "steps": int(steps),
            "train_s": round(float(row["trial_wall_s"]), 2),
            "steps_per_s": round(steps / float(row["trial_wall_s"]), 3),
            "trial_wall_s": round(float(row["wall_time_s"]), 1),
            "sweep_wall_s": round(wall, 1), "error": row.get("error")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", type=Path, required=True, help="student model folder (e.g. MiniLM's)")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--cpus", type=float, default=float(os.cpu_count() or 2), help="CPUs a trial, over its workers")
    ap.add_argument("--gpus-per-worker", type=float, default=0.0)
    ap.add_argument("--train-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32, help="the global batch (rows a step, over all workers)")
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here too")
    ap.add_argument("--fsdp", action="store_true", help="shard the student over the workers (training.fsdp)")
    args = ap.parse_args()

    from bias_ray.runtime import init_ray

    init_ray(num_cpus=int(args.cpus) if not args.gpus_per_worker else None)
    rows = []
    from bias_ray.models import build_tiny_model
    from bias_ray.spec import default_data_root

    with tempfile.TemporaryDirectory(prefix="bias-ray-scaling-") as d:
        generator = build_tiny_model(Path(d) / "tiny", args.data_root or default_data_root())
        for w in args.workers:
            rows.append(run(w, args, Path(d), generator))
            print(json.dumps(rows[-1]), flush=True)
    base = next(r["steps_per_s"] for r in rows if r["workers"] == rows[0]["workers"])
    print(f"\n{args.student}: global batch {args.batch_size}, {args.train_size} rows, {args.cpus:g} CPUs a trial, "
          f"{args.gpus_per_worker:g} GPU a worker")
    for r in rows:
        label = f"{r['workers']} worker(s){' FSDP' if r['fsdp'] else ''}"
        print(f"  {label}: {r['steps_per_s']:.3f} steps/s = {r['steps_per_s'] / base:.2f}x one worker "
              f"(training {r['train_s']} s; the trial {r['trial_wall_s']} s with its start-up)")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
