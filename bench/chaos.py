"""Chaos soak (bench, not a test): a generation job and a small sweep while random workers are SIGKILLed.

On the local Ray, with the tiny model: (a) a generation job (one engine actor) while a thread SIGKILLs a
random live generation actor every ``--every`` seconds, up to ``--kills`` times; (b) a sweep of
``--trials`` trials while the same thread kills a random live trial process. Then the same job and sweep
run again, untouched, in other folders, and the invariants are checked:

- generation: every requested sample id exactly once, and the texts equal the clean job's;
- sweep: every trial finished (no error), and each trial's final metrics equal the clean sweep's.

It prints the counts (kills, actor restarts, trial starts beyond one per trial, rows checked) and the
differences from the clean run (0 expected), and writes them to ``--out``.

    PYTHONPATH=. python bench/chaos.py --kills 6 --every 3 --out bench/results/chaos_2core.txt
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd


def live_actors(class_part: str) -> dict[str, int]:
    """Actor id -> pid of this session's live actors whose class name holds ``class_part`` (GCS actor table)."""
    import ray._private.state as gcs

    return {aid: a["Pid"] for aid, a in gcs.actors().items()
            if a.get("State") == "ALIVE" and class_part in (a.get("ActorClassName") or "") and a.get("Pid")}


def restarts(class_part: str) -> int:
    import ray._private.state as gcs

    return sum(int(a.get("NumRestarts", 0) or 0) for a in gcs.actors().values()
               if class_part in (a.get("ActorClassName") or ""))


class Killer(threading.Thread):
    """SIGKILLs a random live actor of ``class_part`` every ``every`` s, at most ``kills`` times, until stopped."""

    def __init__(self, class_part: str, kills: int, every: float, seed: int = 0) -> None:
        super().__init__(daemon=True)
        self.class_part, self.kills, self.every = class_part, kills, every
        self.rng, self.done, self.stop_event = random.Random(seed), [], threading.Event()

    def run(self) -> None:
        while len(self.done) < self.kills and not self.stop_event.wait(self.every):
            actors = live_actors(self.class_part)
            if actors:
                pid = actors[self.rng.choice(sorted(actors))]
                try:
                    os.kill(pid, signal.SIGKILL)
                    self.done.append(pid)
                except ProcessLookupError:
                    pass

    def stop(self) -> int:
        self.stop_event.set()
        self.join(10)
        return len(self.done)


def spec_for(folder: Path, model: Path, data_root: Path, trials: int, samples: int):
    from bias_ray.spec import parse_spec

    ratios = [round(r, 3) for r in np.linspace(0.0, 0.6, trials)]
    return parse_spec({
        "name": "chaos", "output_dir": str(folder), "models": {"generator": str(model), "student": str(model)},
        "data": {"root": str(data_root)}, "bias_types": ["religion"], "bias_ratios": ratios, "mitigations": ["none"],
        "seeds": [0],
        "generation": {"samples_per_bias_type": samples, "max_new_tokens": 16, "batch_size": 8, "shard_rows": 8,
                       "concurrency": 1},
        "training": {"train_size": 64, "epochs": 6, "batch_size": 16, "eval_every": 2, "max_eval_rows": 64},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1, "max_failures": 50},
        "tracking": {"wandb": "disabled"}, "evaluation": {"tasks": []}, "analysis": {"enabled": False},
    })


def shard_rows(out: Path) -> pd.DataFrame:
    parts = sorted(out.glob("shards/part-*.parquet"))
    return pd.concat([pd.read_parquet(p, columns=["sample_id", "text"]) for p in parts]).sort_values("sample_id")


def counting_trainable(starts: Path):
    def trainable(config, spec_dict):
        from bias_ray.train.trainable import train_trial

        with open(starts, "a") as f:
            f.write(json.dumps(config["bias_ratio"]) + "\n")
        train_trial(config, spec_dict)

    return trainable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=6, help="kills per stage")
    ap.add_argument("--every", type=float, default=3.0, help="seconds between kills")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--samples", type=int, default=400, help="generation samples")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from bias_ray.generate.pipeline import _plan, generate
    from bias_ray.models.tiny import build_tiny_model
    from bias_ray.runtime import init_ray
    from bias_ray.spec import default_data_root
    from bias_ray.train.sweep import run_sweep

    init_ray()
    root = Path(tempfile.mkdtemp(prefix="bias-ray-chaos-"))
    data_root = default_data_root()
    model = build_tiny_model(root / "tiny", data_root=data_root)
    lines = [f"chaos soak: {args.kills} kills per stage, one every {args.every:g} s, tiny model, 2-core CPU"]

    # (a) generation
    spec = spec_for(root / "chaos", model, data_root, args.trials, args.samples)
    killer = Killer("TransformersGenerator", args.kills, args.every, seed=1)
    killer.start()
    started = time.perf_counter()
    generate(spec, progress=False)
    gen_kills, gen_wall = killer.stop(), time.perf_counter() - started
    gen_restarts = restarts("TransformersGenerator")
    got = shard_rows(spec.augmented_dir)
    plan = _plan(spec)
    requested = set(plan.sample_ids(np.arange(plan.total)))
    clean_spec = spec_for(root / "clean", model, data_root, args.trials, args.samples)
    clean = shard_rows(generate(clean_spec, progress=False))
    merged = got.merge(clean, on="sample_id", how="outer", suffixes=("", "_clean"), indicator=True)
    gen = {"kills": gen_kills, "actor_restarts": gen_restarts, "rows_checked": len(got), "requested": len(requested),
           "duplicated_ids": int(got["sample_id"].duplicated().sum()),
           "lost_ids": len(requested - set(got["sample_id"])),
           "texts_differing_from_clean": int((merged["_merge"] != "both").sum()
                                             + (merged["text"] != merged["text_clean"]).sum()),
           "wall_s": round(gen_wall, 1)}
    lines.append("generation: " + json.dumps(gen))

    # (b) sweep
    starts = root / "starts.txt"
    killer = Killer("ImplicitFunc", args.kills, args.every, seed=2)
    killer.start()
    started = time.perf_counter()
    table = run_sweep(spec, trainable=counting_trainable(starts))
    sweep_kills, sweep_wall = killer.stop(), time.perf_counter() - started
    clean_table = run_sweep(clean_spec)
    cols = ["macro_f1", "accuracy", "train_loss", "steps_run"]
    both = table.set_index("bias_ratio")[cols].join(clean_table.set_index("bias_ratio")[cols], rsuffix="_clean")
    differing = sum(int((both[c] != both[f"{c}_clean"]).sum()) for c in cols)
    n_starts = len(starts.read_text().splitlines()) if starts.exists() else 0
    sweep = {"kills": sweep_kills, "trials": len(table), "trial_starts": n_starts,
             "retries": n_starts - len(table), "failed_trials": int(table["error"].notna().sum()),
             "lost_trials": args.trials - len(table), "metric_values_differing_from_clean": differing,
             "metric_values_checked": len(both) * len(cols), "wall_s": round(sweep_wall, 1)}
    lines.append("sweep: " + json.dumps(sweep))
    total_diff = gen["duplicated_ids"] + gen["lost_ids"] + gen["texts_differing_from_clean"] + differing \
        + sweep["failed_trials"] + sweep["lost_trials"]
    lines.append(f"kills survived: {gen_kills + sweep_kills}; rows checked: {len(got)}; differences from a clean "
                 f"run: {total_diff}")
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
