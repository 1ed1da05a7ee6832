"""Trial data step, finalize and shard size at scale (a benchmark: prints figures, asserts nothing).

Builds an augmented set of ``--rows`` rows once under ``--workdir`` in the exact lean shard
layout (synthetic rows written directly with pyarrow: ToxiGen statements made unique by a
suffix, 5% exact duplicates, 10% filtered, six bias types in contiguous index segments as a
generation job writes them), then measures, each step in a fresh child process:

* finalize: ``_finalize`` over the shards (counts, duplicates, manifest): wall and peak RSS;
* one trial's data step: ``trial_data`` (real rows + the mix), wall and peak RSS above the
  process's baseline (RSS after imports);
* ``--old-rows``: the same two steps as the code before did them (every shard, every column
  into pandas), on a set of that size (it needs ~0.7 GiB per million rows: keep it small);
* bytes per row of a shard in the old layout (raw text copy, per-job constants on every row)
  and the lean one;
* ``--imported-rows``: an imported set as the issue measured it (9 columns, ~200-character
  texts): the import's wall and peak RSS above the process's baseline, then one trial's data
  step on it. ``--import-from frame`` hands ``import_augmented`` a pandas frame (the frame is in
  the baseline); ``parquet`` / ``jsonl`` first write the rows to files of ``--file-rows`` rows
  (in another process) and import the files, as ``bias-ray import SPEC FILES`` does;
  ``--import-filter`` imports with the quality filters and duplicate removal (``--filter``).
  Peaks are VmHWM, reset when the step starts.

    PYTHONPATH=. python bench/trial_data.py --rows 10000000 --old-rows 2000000 --workdir /tmp/trial-data
    PYTHONPATH=. python bench/trial_data.py --rows 0 --imported-rows 2000000 --import-from parquet
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bias_ray.augmented.store import SHARD_ROW_GROUP_ROWS, UNSTATS_COLUMNS
from bias_ray.spec import default_data_root, parse_spec

BIAS_TYPES = ["gender", "race", "religion", "nationality", "disability", "sexual_orientation"]
JOB = {"engine": "transformers", "model": "/models/generator", "template_id": "toxigen_statements",
       "template_version": 1, "sampling": {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": 64,
                                          "max_prompt_tokens": 192, "seed": 0}}


def bench_spec(workdir: Path, train_size: int = 320):
    return parse_spec({
        "name": "trial_data", "output_dir": str(workdir / "run"), "models": {"generator": "g", "student": "s"},
        "data": {"root": str(default_data_root())}, "bias_types": BIAS_TYPES, "bias_ratios": [0.5],
        "mitigations": ["none"], "training": {"train_size": train_size}, "tracking": {"wandb": "disabled"},
    }, check_files=False)


def synthetic_rows(start: int, stop: int, total: int, bases: np.ndarray, groups: dict[str, list[str]],
                   old_layout: bool = False) -> pa.Table:
    """Rows ``start..stop`` of a synthetic job of ``total`` rows, in the lean (or the old) shard layout."""
    rng = np.random.default_rng(start)
    idx = np.arange(start, stop, dtype=np.int64)
    text_key = np.where(idx % 20 == 0, np.maximum(idx - 1, 0), idx)  # every 20th row repeats its neighbour
    text = pc.binary_join_element_wise(pa.array(bases[text_key % len(bases)]),
                                       pc.cast(pa.array(text_key), pa.string()), " #")
    seg = np.minimum(idx * len(BIAS_TYPES) // total, len(BIAS_TYPES) - 1)
    bias = np.array(BIAS_TYPES, dtype=object)[seg]
    group = np.array([groups[b][i % len(groups[b])] for b, i in zip(bias, idx)], dtype=object)
    seg_start = seg * total // len(BIAS_TYPES)
    biased = (idx - seg_start) < (total // len(BIAS_TYPES)) // 2
    columns = {
        "sample_id": pa.array([f"{(i * 11400714819323198485) % 2**64:016x}" for i in idx.tolist()]),
        "index": pa.array(idx),
        "text": text,
        "generated_tokens": pa.array(rng.integers(20, 64, len(idx))),
        "drop_reason": pa.array(rng.choice(["", "too_short", "refusal"], size=len(idx), p=[0.9, 0.08, 0.02])),
        "label": pa.array(biased.astype(np.int64)),
        "group": pa.array(group),
        "bias_type": pa.array(bias),
        "stance": pa.array(np.where(biased, "biased", "counter")),
        "seed_ids": pa.array([f"{a:016x},{b:016x},{c:016x}" for a, b, c in rng.integers(0, 2**62, (len(idx), 3))]),
        "device": pa.array(np.full(len(idx), "cuda:0", dtype=object)),
        "engine_s": pa.array(rng.random(len(idx)) / 1000),
    }
    if old_layout:  # as shards were: the raw output next to the cleaned text, the job constants on every row
        columns["generated_text"] = pc.binary_join_element_wise(text, pa.array(bases[(text_key + 7) % len(bases)]),
                                                                "\n- ")
        for key in ("engine", "model", "template_id", "template_version"):
            columns[key] = pa.array([JOB[key]] * len(idx))
        columns["sampling"] = pa.array([json.dumps(JOB["sampling"], sort_keys=True)] * len(idx))
    return pa.table(columns)


def _bases() -> tuple[np.ndarray, dict[str, list[str]]]:
    from bias_ray.data.loaders import load_toxigen
    from bias_ray.spec import bias_type_catalog

    real = load_toxigen(default_data_root())
    texts = real["text"].astype(str)
    bases = np.array([(t + " " + t)[:190] for t in texts], dtype=object)  # ~200 characters with the suffix
    catalog = bias_type_catalog()
    return bases, {b: list(catalog[b]["groups"]) for b in BIAS_TYPES}


def build_set(workdir: Path, rows: int, shard_rows: int) -> Path:
    """A finished-looking job (shards, job.json) of ``rows`` synthetic rows; reused when present."""
    spec = bench_spec(workdir)
    out = spec.augmented_dir
    marker = out / "built.json"
    if marker.exists() and json.loads(marker.read_text()) == {"rows": rows, "shard_rows": shard_rows}:
        return out
    shutil.rmtree(out, ignore_errors=True)
    (out / "shards").mkdir(parents=True)
    (out / "quarantine").mkdir()
    bases, groups = _bases()
    started = time.perf_counter()
    for k, start in enumerate(range(0, rows, shard_rows)):
        table = synthetic_rows(start, min(rows, start + shard_rows), rows, bases, groups)
        pq.write_table(table, out / "shards" / f"part-{k:06d}.parquet", row_group_size=SHARD_ROW_GROUP_ROWS,
                       write_statistics=[c for c in table.column_names if c not in UNSTATS_COLUMNS])
    (out / "job.json").write_text(json.dumps(JOB))
    marker.write_text(json.dumps({"rows": rows, "shard_rows": shard_rows}))
    print(f"built {rows:,} rows in {k + 1} shards in {time.perf_counter() - started:.1f} s "
          f"({sum(p.stat().st_size for p in (out / 'shards').iterdir()) / 2**30:.2f} GiB)", flush=True)
    return out


# ---------------------------------------------------------------- the steps (each in a child process)
def old_load_augmented(out: Path) -> pd.DataFrame:
    """load_augmented as it was: every shard, every column, into pandas."""
    parts = sorted((out / "shards").glob("part-*.parquet"))
    rows = pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)
    dups = set(pd.read_parquet(out / "duplicates.parquet")["sample_id"])
    rows = rows[(rows["drop_reason"] == "") & ~rows["sample_id"].isin(dups)].copy()
    rows["id"] = rows["sample_id"]
    return rows.sort_values("index").reset_index(drop=True)


def old_trial_data(spec, bias_type: str, ratio: float, seed: int):
    from bias_ray.data.loaders import load_toxigen
    from bias_ray.mix import mix

    real = load_toxigen(spec.data.resolved_root, spec.data.test_fraction)
    augmented = old_load_augmented(spec.augmented_dir)
    augmented = augmented[augmented["bias_type"] == bias_type]
    return mix(real[real["split"] == "train"], augmented, ratio, spec.training.train_size, spec.training.mix_mode,
               seed)


def old_finalize(out: Path) -> dict:
    """The old finalize's reads and duplicate search: six columns of every shard into one frame."""
    from bias_ray.augmented.finalize import find_duplicates

    cols = ["sample_id", "text", "drop_reason", "generated_tokens", "engine_s", "device"]
    parts = sorted((out / "shards").glob("part-*.parquet"))
    rows = pd.concat([pq.read_table(p, columns=cols).to_pandas() for p in parts], ignore_index=True)
    ids = rows["sample_id"]
    _ = int(ids.duplicated().sum()), set(ids)
    dups = find_duplicates(rows)
    dropped = rows.loc[rows["drop_reason"] != "", "drop_reason"].value_counts().to_dict()
    return {"rows": len(rows), "duplicates": len(dups), "dropped": dropped,
            "tokens": int(rows["generated_tokens"].sum())}


def imported_frame(rows: int) -> pd.DataFrame:
    """An import as a user hands it over: 9 columns, unique ids, ~200-character texts, six bias types."""
    bases, groups = _bases()
    table = synthetic_rows(0, rows, rows, bases, groups)
    table = table.rename_columns(["id" if c == "sample_id" else c for c in table.column_names])
    return table.select(["id", "text", "label", "group", "bias_type", "stance", "seed_ids", "device",
                         "engine_s"]).to_pandas()


FILE_ROWS = 1_000_000


def write_import_files(workdir: Path, rows: int, file_rows: int, fmt: str) -> list[Path]:
    """The import's rows as files of ``file_rows`` rows, as a user's own generation job would leave them."""
    folder = workdir / f"to-import-{fmt}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    frame = imported_frame(rows)
    for k, start in enumerate(range(0, rows, file_rows)):
        piece = frame.iloc[start:start + file_rows]
        if fmt == "parquet":
            piece.to_parquet(folder / f"rows-{k:04d}.parquet", index=False)
        else:
            piece.to_json(folder / f"rows-{k:04d}.jsonl", orient="records", lines=True)
    return sorted(folder.iterdir())


def reset_peak_rss() -> None:
    """Start this process's peak RSS (VmHWM) anew from its RSS now: building the user's frame may peak
    higher than the frame itself, and that is not the import's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM, which starts anew at exec. (``ru_maxrss`` keeps the
    pre-exec high-water mark, i.e. the forking parent's RSS: a parent holding a big frame inflates it.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(step: str, workdir: Path, bias_type: str, seed: int, rows: int = 0, source: str = "frame",
          file_rows: int = FILE_ROWS, filter_rows: bool = False) -> None:
    from bias_ray.generate import imported, pipeline  # noqa: F401  (imports count in the baseline, not the step)
    from bias_ray.train import trainable  # noqa: F401

    spec = bench_spec(workdir)
    frame = None
    if step == "import":  # the user's frame is in the baseline; files are read by the import
        frame = imported_frame(rows) if source == "frame" else sorted((workdir / f"to-import-{source}").iterdir())
    reset_peak_rss()
    baseline = psutil.Process().memory_info().rss
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    if step == "trial":
        train, _ = trainable.trial_data(spec, bias_type, 0.5, seed)
        info = {"train_rows": len(train), "augmented_rows": int(train["is_augmented"].sum()),
                "ids": train["id"].head(5).tolist()}
    elif step == "old-trial":
        train = old_trial_data(spec, bias_type, 0.5, seed)
        info = {"train_rows": len(train), "augmented_rows": int(train["is_augmented"].sum()),
                "ids": train["id"].head(5).tolist()}
    elif step == "finalize":
        total = sum(pq.ParquetFile(p).metadata.num_rows for p in (spec.augmented_dir / "shards").iterdir())
        manifest = pipeline._finalize(spec, SimpleNamespace(total=total), json.loads(
            (spec.augmented_dir / "job.json").read_text()), {})
        info = {k: manifest[k] for k in ("rows", "generated", "dropped")}
    elif step == "old-finalize":
        info = old_finalize(spec.augmented_dir)
    elif step.startswith("write-"):
        files = write_import_files(workdir, rows, file_rows, step.removeprefix("write-"))
        info = {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}
    elif step == "import":
        shutil.rmtree(spec.augmented_dir, ignore_errors=True)
        out = imported.import_augmented(spec, frame, filter_rows=filter_rows)
        manifest = json.loads((out / "manifest.json").read_text())
        info = {k: manifest[k] for k in ("rows", "kept", "dropped", "duplicates")}
        info["shards"] = len(list((out / "shards").glob("part-*.parquet")))
    else:
        raise ValueError(step)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = peak_rss()
    print(json.dumps({"step": step, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime - cpu_before,
                      "baseline_rss": baseline, "peak_rss": peak,
                      "peak_above_baseline": peak - baseline, **info}))


def run_child(step: str, workdir: Path, bias_type: str = "religion", seed: int = 0, timeout: int = 900,
              rows: int = 0, source: str = "frame", file_rows: int = FILE_ROWS, filter_rows: bool = False) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", step, "--workdir", str(workdir),
                           "--bias-type", bias_type, "--seed", str(seed), "--imported-rows", str(rows),
                           "--import-from", source, "--file-rows", str(file_rows)]
                          + (["--import-filter"] if filter_rows else []),
                          capture_output=True, text=True, timeout=timeout, env={**os.environ})
    if proc.returncode:
        raise RuntimeError(f"{step} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def report(label: str, r: dict) -> None:
    print(f"  {label:<34} wall {r['wall_s']:6.2f} s  CPU {r['cpu_s']:6.2f} s  peak RSS {_mib(r['peak_rss'])} "
          f"({_mib(r['peak_above_baseline'])} above the {_mib(r['baseline_rss'])} baseline)", flush=True)


def bytes_per_row(workdir: Path, rows: int = 100_000) -> None:
    bases, groups = _bases()
    sizes = {}
    for name, old in (("old", True), ("lean", False)):
        path = workdir / f"layout-{name}.parquet"
        # the old layout was written in one row group per shard, the lean one in small row groups
        table = synthetic_rows(0, rows, rows, bases, groups, old_layout=old)
        pq.write_table(table, path, row_group_size=None if old else SHARD_ROW_GROUP_ROWS,
                       write_statistics=True if old else [c for c in table.column_names if c not in UNSTATS_COLUMNS])
        sizes[name] = path.stat().st_size / rows
        path.unlink()
    print(f"  shard bytes per row on disk ({rows:,} rows, snappy, synthetic rows with a two-statement raw "
          f"output): old layout {sizes['old']:.1f}, lean "
          f"{sizes['lean']:.1f} ({(1 - sizes['lean'] / sizes['old']) * 100:.0f}% less)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--old-rows", type=int, default=0, help="also time the old code on a set of this size (0: skip)")
    ap.add_argument("--shard-rows", type=int, default=50_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bias-ray-trial-data"))
    ap.add_argument("--seeds", type=int, default=3, help="trials timed (different seeds and bias types)")
    ap.add_argument("--keep", action="store_true", help="keep the built sets (default: delete them at the end)")
    ap.add_argument("--skip-finalize", action="store_true", help="reuse a finalized set (its manifest) from --keep")
    ap.add_argument("--imported-rows", type=int, default=0,
                    help="also import a set of this size (9 columns) and time a trial on it")
    ap.add_argument("--import-from", default="frame", choices=["frame", "parquet", "jsonl"],
                    help="what the import reads: a pandas frame in memory, or files written first")
    ap.add_argument("--file-rows", type=int, default=FILE_ROWS,
                    help="rows per file with --import-from parquet/jsonl (pandas' default: one row group a file)")
    ap.add_argument("--import-filter", action="store_true",
                    help="import with the quality filters and exact-duplicate removal (bias-ray import --filter)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--bias-type", default="religion", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.workdir, args.bias_type, args.seed, args.imported_rows, args.import_from,
              args.file_rows, args.import_filter)
        return
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()}", flush=True)
    bytes_per_row(args.workdir.parent if args.workdir.exists() else Path("/tmp"))
    try:
        for label, rows, steps in (("old code", args.old_rows, ("old-finalize", "old-trial")),
                                   ("this code", args.rows, ("finalize", "trial"))):
            if not rows:
                continue
            work = args.workdir / f"rows-{rows}"
            build_set(work, rows, args.shard_rows)
            print(f"{label}, {rows:,} augmented rows, {args.shard_rows:,}-row shards:", flush=True)
            if steps[0] == "old-finalize":  # the old read needs the duplicates file the new finalize writes
                run_child("finalize", work)
            for step in steps:
                if step == "finalize" and args.skip_finalize and (work / "run/data/augmented/manifest.json").exists():
                    continue
                for k in range(args.seeds if "trial" in step else 1):
                    bias = BIAS_TYPES[k % len(BIAS_TYPES)]
                    r = run_child(step, work, bias, k)
                    report(f"{step} ({bias}, seed {k})" if "trial" in step else step, r)
                    if step.endswith("finalize"):
                        keys = ("rows", "generated", "dropped", "duplicates")
                        print(f"    {json.dumps({k: v for k, v in r.items() if k in keys})}")
            print(f"  load {os.getloadavg()}", flush=True)
        if args.imported_rows:
            work = args.workdir / f"imported-{args.imported_rows}"
            source = args.import_from
            print(f"imported set, {args.imported_rows:,} rows (9 columns, ~200-character texts) from "
                  f"{'a pandas frame' if source == 'frame' else source + ' files'}:", flush=True)
            if source != "frame":  # in a child: the files' frame never sits in this (forking) process
                w = run_child(f"write-{source}", work, rows=args.imported_rows, timeout=3600, file_rows=args.file_rows)
                print(f"  wrote {w['files']} {source} files of {args.file_rows:,} rows, {w['bytes'] / 2**20:,.0f} MiB, "
                      f"in {w['wall_s']:.1f} s", flush=True)
            r = run_child("import", work, rows=args.imported_rows, timeout=3600, source=source,
                          filter_rows=args.import_filter)
            report(f"import_augmented ({r['shards']} shards{', filtered' if args.import_filter else ''})", r)
            print(f"    {json.dumps({k: r[k] for k in ('rows', 'kept', 'dropped', 'duplicates')})}", flush=True)
            for k in range(args.seeds):
                bias = BIAS_TYPES[k % len(BIAS_TYPES)]
                report(f"trial ({bias}, seed {k})", run_child("trial", work, bias, k))
            print(f"  load {os.getloadavg()}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
