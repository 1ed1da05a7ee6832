"""How well each early report predicts a trial's final metric, and what ASHA would stop, on full grids.

Runs the early-stop benchmark's grid (:func:`bench.early_stop.bench_spec`) with ``scheduler: none``
for each of ``--seeds``, keeps every trial's per-report history of the scheduler metric (Tune's
``progress.csv``), and prints

- the Spearman rank correlation, over the grid's trials, between the metric at report ``i`` and
  the final report's;
- whether the grid's best config by the last report is the best by the report before (when it
  is not, evaluation noise decides "the best");
- an exact replay of ASHA on those histories for each ``--replay`` setting: with one trial at a
  time (``max_concurrent_trials: 1``) and deterministic trials, ASHA sees exactly the full grid's
  reports in grid order, so the rungs the sweep uses (:class:`bias_ray.train.early_stop.Rungs`)
  fed the histories make the live run's decisions. Each replay gives the iteration share and
  whether ASHA's best is the full grid's.

A replay setting is ``grace_period:reduction_factor[:stop_margin[:group_key,...]]``, e.g.
``1:3:0.05:mitigation``. Use seeds other than the ones a benchmark reports on, to choose settings
without fitting them to those seeds.

    PYTHONPATH=. python bench/early_stop_signal.py --seeds 10 11 12 [--replay 1:3 1:3:0.05:mitigation]
        [--training '{"lr_schedule": "linear"}'] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
from pathlib import Path

from bench.early_stop import bench_spec, best_is_stable, rank_correlations, trial_histories
from bias_ray.generate.pipeline import generate
from bias_ray.models import ensure_model
from bias_ray.runtime import init_ray
from bias_ray.spec import default_data_root, parse_spec
from bias_ray.train.early_stop import Rungs
from bias_ray.train.sweep import run_sweep


def replay_asha(histories: list[dict], grace_period: int, reduction_factor: float, stop_margin: float = 0.0,
                group_by: tuple[str, ...] = ()) -> dict:
    """ASHA's decisions on these histories (higher is better), trials run one at a time in order."""
    max_t = max(len(h["history"]) for h in histories)
    groups: dict[tuple, Rungs] = {}
    used, last = [], []
    for n, h in enumerate(histories):
        key = tuple(str(h["cell"][k]) for k in group_by)
        rungs = groups.setdefault(key, Rungs(grace_period, max_t, reduction_factor, stop_margin))
        for t in range(1, len(h["history"]) + 1):
            if t >= max_t or rungs.on_result(str(n), t, h["history"][t - 1]) == "STOP":
                break
        used.append(t)
        last.append(h["history"][t - 1])
    full_best = max(range(len(histories)), key=lambda i: histories[i]["history"][-1])
    asha_best = max(range(len(histories)), key=lambda i: last[i])
    return {"iteration_share": round(sum(used) / sum(len(h["history"]) for h in histories), 3),
            "reports_used": used, "best_survives": used[full_best] == len(histories[full_best]["history"]),
            "same_best": asha_best == full_best}


def replay_sha(histories: list[dict], grace_period: int, reduction_factor: float, stop_margin: float = 0.0,
                group_by: tuple[str, ...] = ()) -> dict:
    """Synchronous successive halving on these histories: every trial of a group reaches a rung before any
    goes on; the top ``ceil(n / eta)`` (and any within ``stop_margin`` of the last of them) continue.

    Run one trial at a time this needs each survivor paused at every rung and resumed from its
    checkpoint later (``resumes``), which ASHA never does.
    """
    max_t = max(len(h["history"]) for h in histories)
    used, resumes = [0] * len(histories), 0
    groups: dict[tuple, list[int]] = {}
    for n, h in enumerate(histories):
        groups.setdefault(tuple(str(h["cell"][k]) for k in group_by), []).append(n)
    for alive in groups.values():
        rung = grace_period
        while True:
            rung = min(rung, max_t)
            resumes += sum(1 for n in alive if 0 < used[n] < rung)
            for n in alive:
                used[n] = rung
            if rung >= max_t:
                break
            values = sorted((histories[n]["history"][rung - 1] for n in alive), reverse=True)
            cutoff = values[max(1, math.ceil(len(alive) / reduction_factor)) - 1] - stop_margin
            alive = [n for n in alive if histories[n]["history"][rung - 1] >= cutoff]
            rung = int(rung * reduction_factor)
    last = [histories[n]["history"][used[n] - 1] for n in range(len(histories))]
    full_best = max(range(len(histories)), key=lambda i: histories[i]["history"][-1])
    best = max(range(len(histories)), key=lambda i: last[i])
    return {"iteration_share": round(sum(used) / sum(len(h["history"]) for h in histories), 3),
            "reports_used": used, "resumes": resumes, "same_best": best == full_best}


def parse_setting(text: str) -> tuple[int, float, float, tuple[str, ...]]:
    parts = text.split(":")
    return (int(parts[0]), float(parts[1]), float(parts[2]) if len(parts) > 2 else 0.0,
            tuple(k for k in parts[3].split(",") if k) if len(parts) > 3 else ())


def run_grid(args, seed: int) -> list[dict]:
    """The bench's full grid (``scheduler: none``) for one seed; every trial's per-report history."""
    out = args.out.resolve()
    init_ray()

    def spec_for(seed: int | None):
        d = bench_spec(out, {"name": "none"}, seed or 0, None if seed is None else out / f"seed{seed}")
        d["training"] |= args.training
        return parse_spec(d, check_files=False)

    gen_spec = spec_for(None)
    ensure_model(gen_spec.models.student, default_data_root(), True)
    generate(gen_spec)  # once: a finished job is left as it is
    spec = spec_for(seed)
    if spec.run_dir.exists():
        shutil.rmtree(spec.run_dir)
    shutil.copytree(gen_spec.augmented_dir, spec.augmented_dir)
    return trial_histories(run_sweep(spec, verbose=0), args.metric)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_early_stop_signal"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--metric", default="macro_f1")
    ap.add_argument("--replay", nargs="*",
                    default=["1:3", "2:3", "1:3:0:mitigation", "1:3:0.05", "1:3:0.05:mitigation"])
    ap.add_argument("--training", type=json.loads, default={},
                    help='JSON overrides of the bench\'s training section, e.g. \'{"eval_every": 2}\'')
    ap.add_argument("--replay-sha", nargs="*", default=[],
                    help="the same settings replayed as synchronous successive halving (replay_sha)")
    ap.add_argument("--json", type=Path, help="also write the histories and figures here")
    ap.add_argument("--from-json", type=Path,
                    help="replay the histories recorded in this --json file (its seeds) instead of running grids")
    args = ap.parse_args()
    if args.from_json:
        recorded = json.loads(args.from_json.read_text())
        figures = {**recorded, "seeds": {}}
        args.seeds = list(recorded["seeds"])
        runs = ((seed, recorded["seeds"][seed]["histories"]) for seed in args.seeds)
    else:
        figures = {"metric": args.metric, "training_overrides": args.training, "seeds": {}}
        runs = ((seed, run_grid(args, seed)) for seed in args.seeds)
    for seed, histories in runs:
        replays = {s: replay_asha(histories, *parse_setting(s)) for s in args.replay}
        sha = {s: replay_sha(histories, *parse_setting(s)) for s in args.replay_sha}
        figures["seeds"][seed] = {"histories": histories, "rank_correlation": rank_correlations(histories),
                                  "best_stable_over_last_two_reports": best_is_stable(histories), "replays": replays,
                                  "replays_sha": sha}
        print(f"seed {seed}: rho(report i, final) = {figures['seeds'][seed]['rank_correlation']}; best by the last "
              f"report is best by the one before: {figures['seeds'][seed]['best_stable_over_last_two_reports']}",
              flush=True)
        for h in histories:
            print(f"    {h['cell']['bias_ratio']:>5} {h['cell']['mitigation']:<6} "
                  + " ".join(f"{v:.3f}" for v in h["history"]))
        for s, r in replays.items():
            print(f"    replay {s}: {r}")
        for s, r in sha.items():
            print(f"    replay (synchronous) {s}: {r}")
    rhos = [figures["seeds"][seed]["rank_correlation"] for seed in args.seeds]
    print("mean rho(report i, final) over seeds:",
          [round(statistics.mean(r[i] for r in rhos if r[i] is not None), 3) for i in range(min(map(len, rhos)))])
    stable = sum(figures["seeds"][seed]["best_stable_over_last_two_reports"] for seed in args.seeds)
    print(f"best by the last report is best by the one before in {stable}/{len(args.seeds)} seeds")
    for kind, settings in (("replays", args.replay), ("replays_sha", args.replay_sha)):
        for s in settings:
            rs = [figures["seeds"][seed][kind][s] for seed in args.seeds]
            label = "replay" if kind == "replays" else "replay (synchronous)"
            print(f"{label} {s}: same best {sum(r['same_best'] for r in rs)}/{len(rs)}, iteration share mean "
                  f"{statistics.mean(r['iteration_share'] for r in rs):.3f}, max "
                  f"{max(r['iteration_share'] for r in rs):.3f}"
                  + (f", resumes per grid {statistics.mean(r['resumes'] for r in rs):.1f}" if "resumes" in rs[0]
                     else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
