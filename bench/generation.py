"""Generation benchmark (not a test): prints figures, asserts nothing.

(a) overhead: the Ray Data job (`generate(spec)`, one engine replica) against a bare batched
    loop over the same engine class, model, prompts and batch size, run twice: in this process
    (torch already imported) and as a fresh Python process timed from its start (a user's own
    script). Both build the prompts, load the model and generate; the job also cleans, filters
    and writes its Parquet shards and manifest. Ray's own start-up and Ray Data's one-time start
    in a session are timed apart (the CLI overlaps the latter with the model preparation;
    ``--cold`` leaves it to the job); the engine actor's start-up is part of the job. The
    generator measures, a CLI step after the job, are timed apart too.
(b) scale: one job of ``--big`` prompts with the tiny model and a small ``max_new_tokens``
    (greedy), its wall time and peak memory: the driver's RSS and the whole process tree's
    (driver + Ray processes) RSS and PSS sums, sampled every 0.5 s. PSS splits shared pages
    (the object store) between the processes that map them, so it is the fairer total.

(c) ceiling: the same job with the ``null`` engine (a fixed output, no model) for ``--null``
    prompts: what Ray Data, prompt building, post-processing, the shard writer and the finalize
    carry, in rows/s, with its wall time and peak memory (driver; process tree RSS and PSS) and
    the bytes it left on disk. First, in this process and without Ray, the CPU each stage costs
    a row (``--null-stage-rows`` rows, in the pipeline's blocks and shards).

    python bench/generation.py --overhead-prompts 2000 --big 0 --null 0     # (a) only
    python bench/generation.py --overhead-prompts 0 --big 1000000 --null 0  # (b) only
    python bench/generation.py --overhead-prompts 0 --big 0 --null 10000000 # (c) only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from bias_ray.spec import default_data_root, parse_spec


class MemorySampler:
    """Peak RSS of this process and peak RSS/PSS sums over it and all its descendants."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s, self.peak_self, self.peak_rss, self.peak_pss = every_s, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _pss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _sample(self) -> None:
        me = psutil.Process()
        procs = [me, *me.children(recursive=True)]
        rss = pss = 0
        for p in procs:
            try:
                rss += p.memory_info().rss
                pss += self._pss(p.pid)
            except psutil.Error:
                continue
        self.peak_self = max(self.peak_self, me.memory_info().rss)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def _spec(work: Path, model: Path, data_root: Path, n: int, **generation):
    return parse_spec({
        "name": "bench", "output_dir": str(work), "models": {"generator": str(model), "student": str(model)},
        "data": {"root": str(data_root)}, "bias_types": ["religion"], "bias_ratios": [0.5], "mitigations": ["none"],
        "generation": {"samples_per_bias_type": n, **generation}, "tracking": {"wandb": "disabled"},
    }, check_files=generation.get("engine", "transformers") == "transformers")


def bare_loop(spec, started: float | None = None) -> tuple[float, int, list[tuple[int, float]]]:
    """The same engine class over the same prompts and batch size, in a plain Python loop.

    Returns wall seconds, generated tokens and ``(prompts done, seconds)`` after each batch, from
    ``started`` (default: now; the imports of the engine's libraries count from there).
    """
    from bias_ray.generate.engines.transformers_engine import TransformersGenerator, engine_settings
    from bias_ray.generate.pipeline import _plan
    from bias_ray.generate.quality import clean_generation

    started = time.perf_counter() if started is None else started
    sampling, device, _ = engine_settings(spec)
    plan = _plan(spec)
    engine = TransformersGenerator(str(spec.models.generator), sampling, device)
    tokens, b, done = 0, spec.generation.batch_size, []
    for start in range(0, plan.total, b):
        rows = plan.rows(np.arange(start, min(start + b, plan.total)))
        out = engine({k: rows[k].to_numpy() for k in rows.columns})
        tokens += int(out["generated_tokens"].sum())
        _ = [clean_generation(t) for t in out["generated_text"]]
        done.append((min(start + b, plan.total), time.perf_counter() - started))
    return time.perf_counter() - started, tokens, done


def time_to(done: list[tuple[int, float]], prompts: int) -> float:
    """Seconds until ``prompts`` prompts were done (``done`` as :func:`bare_loop` returns it)."""
    return next(t for n, t in done if n >= prompts)


FRESH_BARE = """
import json, sys, time
started = time.perf_counter()
sys.path.insert(0, sys.argv[2])
from generation import bare_loop, _spec
from pathlib import Path
args = json.loads(sys.argv[1])
spec = _spec(Path(args["work"]), Path(args["model"]), Path(args["data_root"]), args["n"], **args["generation"])
wall, tokens, done = bare_loop(spec, started)
print("RESULT " + json.dumps({"wall_s": wall, "tokens": tokens, "done": done}))
"""


def bare_loop_fresh(work: Path, model: Path, data_root: Path, n: int,
                    generation: dict) -> tuple[float, int, list[tuple[int, float]]]:
    """:func:`bare_loop` as a user's own script runs it: a new Python process, timed from its start
    (interpreter, imports of torch and transformers, model load, then the loop)."""
    import subprocess
    import sys

    args = json.dumps({"work": str(work), "model": str(model), "data_root": str(data_root), "n": n,
                       "generation": generation})
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", FRESH_BARE, args, str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=3600)
    total = time.perf_counter() - started
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not line:
        raise RuntimeError(f"fresh bare loop failed:\n{proc.stderr[-2000:]}")
    result = json.loads(line[-1].removeprefix("RESULT "))
    launch = total - result["wall_s"]  # the interpreter's start before the script's first line
    return total, result["tokens"], [(k, t + launch) for k, t in result["done"]]


def stage_costs(spec, rows: int) -> dict[str, float]:
    """CPU seconds per row of each stage the pipeline runs, called as it calls them, in one process."""
    import pyarrow as pa

    from bias_ray.augmented.store import SHARD_ROW_GROUP_ROWS, atomic_write_parquet
    from bias_ray.generate.engines.null_engine import null_generate
    from bias_ray.generate.pipeline import _plan, _postprocess, _prompt_batch, block_size

    gen = spec.generation
    plan = _plan(spec)
    block = block_size(gen)  # as _stream cuts the indices
    cpu = dict.fromkeys(("prompt building", "null engine", "post-processing", "shard write"), 0.0)
    done = []
    for start in range(0, rows, block):
        indices = np.arange(start, min(start + block, rows, plan.total))
        clock = time.process_time()
        prompts = _prompt_batch({"data": indices}, plan)
        cpu["prompt building"] += time.process_time() - clock
        clock = time.process_time()
        generated = pa.concat_tables([null_generate(prompts.slice(b, gen.batch_size))
                                      for b in range(0, prompts.num_rows, gen.batch_size)])
        cpu["null engine"] += time.process_time() - clock
        clock = time.process_time()
        done.append(_postprocess(generated, gen.engine, gen.quality))
        cpu["post-processing"] += time.process_time() - clock
    table = pa.concat_tables(done)
    with tempfile.TemporaryDirectory() as folder:
        clock = time.process_time()
        for start in range(0, table.num_rows, gen.shard_rows):
            good = table.slice(start, gen.shard_rows).drop_columns(["engine_error", "generated_text"])
            atomic_write_parquet(good, Path(folder) / f"part-{start}.parquet", SHARD_ROW_GROUP_ROWS)
        cpu["shard write"] += time.process_time() - clock
    return {name: seconds / table.num_rows for name, seconds in cpu.items()}


def pipeline_run(spec) -> tuple[float, dict]:
    """The generation job alone (``generate``): prompts, engine, shards, finalize, manifest."""
    from bias_ray.generate.pipeline import generate

    started = time.perf_counter()
    out = generate(spec, progress=False)
    return time.perf_counter() - started, json.loads((out / "manifest.json").read_text())


def measures_run(spec) -> float:
    """The step the CLI runs after the job: what the generator wrote (stance classifier, lexicons)."""
    from bias_ray.generate.pipeline import measure_generation

    started = time.perf_counter()
    measure_generation(spec)
    return time.perf_counter() - started


def overhead(args, work: Path, model: Path, data_root: Path) -> None:
    """(a): the bare loop in this process once, then ``--repeats`` alternating pairs of (fresh bare loop, job).

    Alternating pairs put a drift in the machine's load on both sides alike; medians over the
    pairs are the figures, with each pair's printed beside them.
    """
    n = args.overhead_prompts
    # the same torch threads on both sides (a fresh process has no Ray to size them from)
    common = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "concurrency": 1,
              "few_shot": args.few_shot, "options": {"cpu_threads": args.cpu_threads}}
    bare_s, bare_tokens, bare_done = bare_loop(_spec(work / "overhead-inproc", model, data_root, n, **common))
    pairs = []
    for r in range(args.repeats):
        load = os.getloadavg()[0]
        fresh_s, _, fresh_done = bare_loop_fresh(work / f"overhead-fresh-{r}", model, data_root, n, common)
        spec = _spec(work / f"overhead-{r}", model, data_root, n, **common)  # a new job folder each time
        pipe_s, manifest = pipeline_run(spec)
        run = manifest["last_run"]
        # the job's first block is a few engine batches (prompts are cut into blocks of whole batches):
        # the bare loops' start-up is their time to the same number of prompts
        first_n = run["first_batch_prompts"]
        fresh_first = time_to(fresh_done, first_n)
        pairs.append({"fresh_s": fresh_s, "job_s": pipe_s, "first_n": first_n, "fresh_first": fresh_first,
                      "job_first": run["first_batch_s"],
                      # after start-up: from that point to the end (the job's finalisation included)
                      "fresh_steady": (n - first_n) / (fresh_s - fresh_first),
                      "job_steady": (n - first_n) / (pipe_s - run["first_batch_s"]),
                      "tokens": manifest["generated_tokens"], "load": (load, os.getloadavg()[0])})
        p = pairs[-1]
        print(f"    pair {r}: fresh bare {fresh_s:.2f} s, job {pipe_s:.2f} s ({(pipe_s / fresh_s - 1) * 100:+.1f}%); "
              f"start-up {fresh_first:.2f} / {p['job_first']:.2f} s; after start-up {p['fresh_steady']:.1f} / "
              f"{p['job_steady']:.1f} prompts/s; load {p['load'][0]:.1f} -> {p['load'][1]:.1f}", flush=True)
    measures_s = measures_run(spec)

    def med(key: str) -> float:
        return statistics.median(p[key] for p in pairs)

    fresh_s, pipe_s, first_n = med("fresh_s"), med("job_s"), pairs[0]["first_n"]
    bare_first = time_to(bare_done, first_n)
    bare_steady = (n - first_n) / (bare_s - bare_first)
    print(f"(a) {n} prompts, batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, 1 engine replica, "
          f"shards of {spec.generation.shard_rows} rows; medians over {len(pairs)} alternating pair(s)")
    print(f"    bare loop, in this process (torch imported): {bare_s:8.2f} s  {n / bare_s:9.1f} prompts/s  "
          f"{bare_tokens / bare_s:9.1f} tokens/s")
    print(f"    bare loop, a fresh process (its imports):    {fresh_s:8.2f} s  {n / fresh_s:9.1f} prompts/s")
    print(f"    Ray Data job (Ray running):                  {pipe_s:8.2f} s  {n / pipe_s:9.1f} prompts/s  "
          f"{med('tokens') / pipe_s:9.1f} tokens/s")
    print(f"    then the generator measures (a CLI step after the job): {measures_s:.2f} s")
    print(f"    end to end: overhead of the job {(pipe_s / bare_s - 1) * 100:+.1f}% against the in-process loop, "
          f"{statistics.median(p['job_s'] / p['fresh_s'] - 1 for p in pairs) * 100:+.1f}% against the fresh "
          "process (median of the pairs; target <= +5%)")
    print(f"    start-up (until the first {first_n} prompts are done): bare in-process {bare_first:.2f} s, "
          f"bare fresh process {med('fresh_first'):.2f} s, Ray Data {med('job_first'):.2f} s (target <= 5 s)")
    print(f"    after start-up: bare in-process {bare_steady:.1f}, fresh {med('fresh_steady'):.1f}, Ray Data "
          f"{med('job_steady'):.1f} prompts/s -> job/fresh "
          f"{statistics.median(p['job_steady'] / p['fresh_steady'] for p in pairs):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="generator folder (default: build the tiny model in a temp dir)")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--overhead-prompts", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--few-shot", type=int, default=3, help="seed statements per prompt in the overhead run")
    ap.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads of the engine, bare loop and job alike (overhead run)")
    ap.add_argument("--big", type=int, default=1_000_000, help="prompts in the scale run (0: skip)")
    ap.add_argument("--big-batch-size", type=int, default=1024)
    ap.add_argument("--big-max-new-tokens", type=int, default=1)
    ap.add_argument("--big-shard-rows", type=int, default=50_000)
    ap.add_argument("--big-max-prompt-tokens", type=int, default=64)
    ap.add_argument("--big-few-shot", type=int, default=3, help="seed statements per prompt in the scale run")
    ap.add_argument("--null", type=int, default=0, help="prompts in the null-engine ceiling run (0: skip)")
    ap.add_argument("--null-batch-size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=1,
                    help="(a): pairs of (fresh bare loop, job) run alternately; figures are medians over them")
    ap.add_argument("--cold", action="store_true",
                    help="leave Ray Data's one-time session start to the first job (default: pay it first, as the CLI)")
    ap.add_argument("--null-stage-rows", type=int, default=100_000,
                    help="rows for the per-stage CPU costs before the null run (0: skip)")
    ap.add_argument("--workdir", type=Path, default=None, help="where job outputs go (default: a temp dir)")
    args = ap.parse_args()

    os.environ.setdefault("BIAS_RAY_PROGRESS", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from bias_ray.runtime import init_ray, quiet_libraries, warm_ray_data

    quiet_libraries()
    data_root = args.data_root or default_data_root()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bias-ray-bench-"))
    model = args.model
    if model is None and not (args.overhead_prompts or args.big):
        model = work / "no-model"  # the null engine needs none
    elif model is None:
        from bias_ray.models import build_tiny_model

        model = build_tiny_model(work / "tiny", data_root)
    print(f"machine: {os.cpu_count()} CPUs, {_gib(psutil.virtual_memory().total)} RAM; model {model}; work {work}")
    started = time.perf_counter()
    init_ray()
    ray_s = time.perf_counter() - started
    if args.cold:
        print(f"Ray start {ray_s:.2f} s; Ray Data's one-time start is left to the first job (--cold)")
    else:  # as the CLI does: the one-time start overlaps the model preparation
        started = time.perf_counter()
        warm_ray_data(wait=True)
        print(f"Ray start {ray_s:.2f} s, then Ray Data's one-time start in this session "
              f"{time.perf_counter() - started:.2f} s (the CLI overlaps it with the model preparation); "
              "neither is part of a job below")

    if args.overhead_prompts:
        overhead(args, work, model, data_root)

    if args.big:
        spec = _spec(work / "big", model, data_root, args.big, batch_size=args.big_batch_size,
                     max_new_tokens=args.big_max_new_tokens, temperature=0.0, shard_rows=args.big_shard_rows,
                     max_prompt_tokens=args.big_max_prompt_tokens, few_shot=args.big_few_shot)
        with MemorySampler() as mem:
            wall, manifest = pipeline_run(spec)
        print(f"(b) {args.big:,} prompts, batch {args.big_batch_size}, max_new_tokens {args.big_max_new_tokens} "
              f"(greedy), max_prompt_tokens {args.big_max_prompt_tokens}, few_shot {args.big_few_shot}")
        print(f"    wall {wall:.1f} s = {args.big / wall:,.1f} prompts/s, {manifest['generated_tokens']:,} tokens "
              f"({manifest['generated_tokens'] / wall:,.1f} tokens/s), {manifest['shards']} shards, "
              f"{manifest['quarantined']} quarantined, dropped {manifest['dropped']}")
        print(f"    peak RSS: driver {_gib(mem.peak_self)}; process tree sum RSS {_gib(mem.peak_rss)}, "
              f"PSS {_gib(mem.peak_pss)} (target < 4 GiB)")

    if args.null:
        spec = _spec(work / "null", model, data_root, args.null, engine="null", batch_size=args.null_batch_size,
                     shard_rows=args.big_shard_rows, few_shot=args.big_few_shot)
        print(f"(c) null engine, {args.null:,} prompts, batch {args.null_batch_size}, "
              f"shards of {args.big_shard_rows:,}, few_shot {args.big_few_shot}")
        if args.null_stage_rows:
            load = os.getloadavg()
            costs = stage_costs(spec, args.null_stage_rows)
            print(f"    CPU per row, one process, {args.null_stage_rows:,} rows: "
                  + ", ".join(f"{name} {s * 1e6:.2f} us" for name, s in costs.items())
                  + f"; total {sum(costs.values()) * 1e6:.2f} us = {1 / sum(costs.values()):,.0f} rows per CPU-second"
                  f" (load {load[0]:.1f})")
        load_before = os.getloadavg()
        with MemorySampler() as mem:
            wall, manifest = pipeline_run(spec)
        run = manifest["last_run"]
        generation = run["wall_s"]
        steady = (args.null - run["first_shard_prompts"]) / max(1e-9, run["last_shard_s"] - run["first_shard_s"])
        disk = sum(p.stat().st_size for p in (work / "null").rglob("*") if p.is_file())
        print(f"    ceiling: {args.null / wall:,.0f} rows/s end to end ({wall:.1f} s); generation "
              f"{args.null / generation:,.0f} rows/s ({generation:.1f} s, first shard after "
              f"{run['first_shard_s']:.1f} s), {steady:,.0f} rows/s between the first and last of "
              f"{manifest['shards']} shards; "
              f"plan + finalize {wall - generation:.1f} s")
        print(f"    peak RSS: driver {_gib(mem.peak_self)}; process tree sum RSS {_gib(mem.peak_rss)}, "
              f"PSS {_gib(mem.peak_pss)}; rows kept {manifest['rows']:,}; on disk {disk / 2**20:,.1f} MiB "
              f"({disk / args.null:.1f} B/row); load before {load_before}, after {os.getloadavg()}")


if __name__ == "__main__":
    main()
