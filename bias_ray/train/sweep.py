"""The sweep: a Ray Tune grid over bias_ratio x bias_type x mitigation (x its own grid) x seed.

Tune's experiment (restorable, local folder or cloud URI) lands in ``storage_path/<name>``; one
row per grid cell in ``results.parquet`` / ``results.csv``; the early-stopping summary in
``sweep_summary.json``. Each concern has one function here: grid expansion, the dry-run plan,
scheduler, trial resources, W&B tracking, the tuner, the results table.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bias_ray.files import note_aside, write_frame, write_json
from bias_ray.mix import mix_counts
from bias_ray.mix.checks import check_mixes
from bias_ray.spec import GRID_AXES, MitigationSpec, SchedulerSpec, SpecError, SweepSpec, dump_spec
from bias_ray.tracking import start_run, trial_callbacks, wandb_mode
from bias_ray.train.checkpoint_repair import repair_missing_checkpoints
from bias_ray.train.distributed import trial_on_workers_trainable
from bias_ray.train.trainable import train_trial

GRID_KEYS = list(GRID_AXES)


# ---------------------------------------------------------------- the grid


def expand_mitigation(m: MitigationSpec) -> list[MitigationSpec]:
    """One config per point of ``m.grid`` (its params plus that point), each with its own label."""
    if not m.grid:
        return [m]
    clash = sorted(set(m.grid) & set(m.params))
    if clash:
        raise SpecError(f"mitigation {m.name!r}: {clash} appear in both params and grid; keep each key in one")
    keys = sorted(m.grid)
    out = []
    for values in itertools.product(*(m.grid[k] for k in keys)):
        point = {**m.params, **dict(zip(keys, values))}
        label = MitigationSpec.model_construct(name=m.name, params=point).label
        try:  # MitigationSpec validates the params against the mitigation's own declaration
            cfg = MitigationSpec(name=m.name, params=point)
        except ValueError as err:  # pydantic's ValidationError is a ValueError
            raise SpecError(f"mitigation {m.name!r}: grid point {label} is invalid: {err}") from None
        out.append(cfg)
    return out


def expand_spec(spec: SweepSpec) -> SweepSpec:
    """The spec the trials see: every mitigation grid crossed out into labelled configs."""
    configs = [c for m in spec.mitigation_specs for c in expand_mitigation(m)]
    labels = [c.label for c in configs]
    if len(set(labels)) != len(labels):
        raise SpecError(f"mitigation grids produce repeated configs: {labels}; list each config once")
    return spec.model_copy(update={"mitigations": configs})


def check_student_tasks(spec: SweepSpec) -> None:
    """Refuse, before any work, likelihood or generation tasks on a student without a language-model head.

    They score the student as a causal LM (``models/heads.py`` says why an encoder cannot be one
    without a random head). Classifier tasks (HateCheck) run on any student.
    """
    from bias_ray.catalog import lm_tasks
    from bias_ray.models.heads import has_lm_head

    if not spec.evaluation.in_trials or spec.training.student_kind == "causal_lm":
        return
    needs_lm = lm_tasks(spec.evaluation.tasks)
    if needs_lm and has_lm_head(spec.models.student) is False:
        raise SpecError(
            f"evaluation.tasks: {', '.join(needs_lm)} score the student as a causal language model, but "
            f"models.student {spec.models.student} has no language-model head (its config's architectures). "
            "Remove them from evaluation.tasks (classifier tasks such as hatecheck run on any student), or use a "
            "causal-LM student (e.g. packaged:smollm2-135m-instruct)")


def check_scheduler_metric(spec: SweepSpec) -> None:
    """Refuse, before any work, a scheduler metric that the trials cannot give or that the mode reads backwards.

    ``roc_auc`` ranks P(label 1), so it needs a 0/1 task (with ``data.labels`` it is NaN in every report); a metric
    that declares its direction (``measures.metrics``) must be maximised when higher is better and minimised when
    lower is, or the scheduler would stop the best trials.
    """
    from bias_ray.measures.metrics import metric_direction

    s = spec.scheduler
    if s.name == "none":
        return
    if s.metric.removeprefix("best_") == "roc_auc" and spec.data.labels:
        raise SpecError(
            f"scheduler.metric roc_auc ranks P(label 1) of a 0/1 task, but data.labels names {len(spec.data.labels)} "
            "classes; use log_loss (scheduler.mode: min) or macro_f1 (mode: max)")
    wanted = {"higher": "max", "lower": "min"}.get(metric_direction(s.metric) or "")
    if wanted and s.mode != wanted:
        raise SpecError(f"scheduler.metric {s.metric}: {metric_direction(s.metric)} is better, but scheduler.mode is "
                        f"{s.mode}, so the scheduler would stop the best trials; set scheduler.mode: {wanted}")


def grid_cells(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every trial of the (expanded) grid as a plain dict of the grid keys."""
    spec = expand_spec(spec)
    axes = ([b.name for b in spec.bias_type_specs], list(spec.bias_ratios),
            [m.label for m in spec.mitigation_specs], list(spec.seeds))
    return [dict(zip(GRID_KEYS, cell)) for cell in itertools.product(*axes)]


def same_cells(spec: SweepSpec) -> dict[tuple, tuple]:
    """Grid cells that would train exactly as another cell: ``{cell key: key of the cell trained}``.

    At bias ratio 0 the mix holds no augmented row, so a mitigation that touches only augmented rows
    and adds nothing to the model (:meth:`Mitigation.same_as_none_without_augmented_rows`: ``mask``,
    ``loss``, ``token(style: prefix)``) trains and is scored exactly as ``none`` on the same seed.
    Such cells are trained once, as ``none`` where the grid has it (else as the first such
    mitigation), and the result is copied (``results.parquet`` column ``same_as``). Off with
    ``training.train_same_cells_once: false``. A key is ``(bias_type, bias_ratio, mitigation, seed)``.
    """
    from bias_ray.train.mitigations import MITIGATIONS

    spec = expand_spec(spec)
    if not spec.training.train_same_cells_once or 0.0 not in spec.bias_ratios:
        return {}
    inert = [m.label for m in spec.mitigation_specs
             if (cls := MITIGATIONS.get(m.name)).same_as_none_without_augmented_rows(cls.validated_params(m.params))]
    if len(inert) < 2:
        return {}
    trained = "none" if "none" in inert else inert[0]
    return {(b.name, 0.0, m, s): (b.name, 0.0, trained, s)
            for b in spec.bias_type_specs for s in spec.seeds for m in inert if m != trained}


def cell_key(cell: dict[str, Any]) -> tuple:
    return tuple(float(cell[k]) if k == "bias_ratio" else cell[k] for k in GRID_KEYS)


def trained_cells(spec: SweepSpec) -> list[dict[str, Any]]:
    """The grid cells a sweep trains: every cell but those :func:`same_cells` copies."""
    copied = same_cells(spec)
    return [c for c in grid_cells(spec) if cell_key(c) not in copied]


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's grid for an expanded spec (see :func:`expand_spec`): every axis crossed, or, where some
    cells are the same as others (:func:`same_cells`), one grid point per trained cell, in the order
    Tune crosses the axes, each axis then read from that cell (``tune.sample_from``)."""
    from ray import tune
    from ray.tune.search.variant_generator import generate_variants

    crossed = {
        "bias_type": tune.grid_search([b.name for b in spec.bias_type_specs]),
        "bias_ratio": tune.grid_search(list(spec.bias_ratios)),
        "mitigation": tune.grid_search([m.label for m in spec.mitigation_specs]),
        "seed": tune.grid_search(list(spec.seeds)),
        "cpus": spec.resources.cpus_per_trial,
    }
    copied = same_cells(spec)
    if not copied:
        return crossed
    cells = [{k: cfg[k] for k in GRID_KEYS} for _, cfg in generate_variants(crossed)]
    cells = {"/".join(map(str, cell_key(c))): c for c in cells if cell_key(c) not in copied}
    return {
        "cell": tune.grid_search(list(cells)),
        **{k: tune.sample_from(lambda s, k=k, cells=cells: cells[s.config["cell"]][k]) for k in GRID_KEYS},
        "cpus": spec.resources.cpus_per_trial,
    }


# ---------------------------------------------------------------- the dry-run plan


def trial_steps(spec: SweepSpec, ratio: float) -> int:
    """Optimizer steps of a full trial at ``ratio`` (the mix size sets the steps per epoch)."""
    tr = spec.training
    counts = mix_counts(ratio, tr.train_size, tr.mix_mode)
    return math.ceil((counts.real + counts.augmented) / tr.rows_per_step) * tr.epochs


def trial_reports(spec: SweepSpec, steps: int) -> int:
    """Tune reports (training iterations) of a full trial: one per ``eval_every`` steps and at the end."""
    return math.ceil(steps / spec.training.eval_every)


DEFAULT_SECONDS_PER_STEP = 0.5  # the tiny CPU student's order of magnitude; real models: resources.seconds_per_step


@dataclass
class SweepPlan:
    trials: pd.DataFrame
    seconds_per_step: float
    gpus_per_trial: float
    seconds_per_step_source: str = "given"

    @property
    def total_steps(self) -> int:
        return int(self.trials["steps"].sum())

    @property
    def trial_hours(self) -> float:
        return self.total_steps * self.seconds_per_step / 3600

    @property
    def gpu_hours(self) -> float:
        return self.trial_hours * self.gpus_per_trial


def plan(spec: SweepSpec, seconds_per_step: float | None = None) -> SweepPlan:
    """What a sweep would run, before anything starts: trials, steps, reports, hours.

    ``seconds_per_step`` (one optimizer step, evaluation amortised): the argument, else the spec's
    ``resources.seconds_per_step``, else :data:`DEFAULT_SECONDS_PER_STEP`; the plan says which.
    """
    if seconds_per_step is not None:
        source = "--seconds-per-step"
    elif spec.resources.seconds_per_step is not None:
        seconds_per_step, source = spec.resources.seconds_per_step, "resources.seconds_per_step"
    else:
        seconds_per_step, source = DEFAULT_SECONDS_PER_STEP, "default; set resources.seconds_per_step"
    if seconds_per_step <= 0:
        raise SpecError(f"seconds per step must be positive, got {seconds_per_step}")
    rows = []
    copied = same_cells(spec)
    for cell in grid_cells(spec):
        if cell_key(cell) in copied:
            continue
        steps = trial_steps(spec, cell["bias_ratio"])
        rows.append({**cell, "steps": steps, "reports": trial_reports(spec, steps)})
    return SweepPlan(pd.DataFrame(rows), seconds_per_step, spec.resources.gpus_per_trial, source)


# ---------------------------------------------------------------- scheduler and resources


def default_max_t(spec: SweepSpec) -> int:
    """Reports of the longest full trial: the natural budget for ASHA/HyperBand."""
    return max(trial_reports(spec, trial_steps(spec, r)) for r in spec.bias_ratios)


def build_scheduler(s: SchedulerSpec, max_t: int):
    """The Tune scheduler named by the spec; times count training iterations (Tune reports).

    ASHA with ``group_by`` or ``stop_margin`` is :class:`bias_ray.train.early_stop.GroupedASHA`
    (the same rule per group, with the margin); plain ASHA is Ray's.
    """
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, MedianStoppingRule

    max_t = s.max_t or max_t
    if s.name == "asha" and (s.group_by or s.stop_margin):
        from bias_ray.train.early_stop import GroupedASHA

        return GroupedASHA(max_t=max_t, grace_period=s.grace_period, reduction_factor=s.reduction_factor,
                           group_by=s.group_by, stop_margin=s.stop_margin)
    if s.name == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=s.grace_period,
                             reduction_factor=s.reduction_factor)
    if s.name == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", max_t=max_t, reduction_factor=s.reduction_factor)
    if s.name == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=s.grace_period)
    return None


DRIVER_MEMORY = 2**20  # bytes Tune reserves for a multi-worker trial's driver (its workers reserve the rest)


def trial_resources(spec: SweepSpec):
    """What Tune reserves for one trial's process.

    One worker: ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs (above 1, whole GPUs on one node for the
    trial's process). ``workers_per_trial`` w > 1: nothing; the trial drives a Ray Train run whose w workers
    reserve their own placement group of w bundles (cpus/w CPUs and gpus/w GPUs each, ``placement_strategy``),
    and :func:`max_concurrent` keeps the trials that run at once within the cluster
    (see :mod:`bias_ray.train.distributed`).
    """
    r = spec.resources
    if r.workers_per_trial > 1:  # Tune refuses an empty request: a token of memory, no CPU
        return {"cpu": 0, "memory": DRIVER_MEMORY}
    return {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial}


def footprint(spec: SweepSpec) -> str:
    """What one trial spans and how many GPUs the grid holds at once, in words (the dry run and ``submit``)."""
    r = spec.resources
    w = r.workers_per_trial
    if w == 1:
        span = f"a trial is one process with {r.cpus_per_trial:g} CPU and {r.gpus_per_trial:g} GPU"
    else:
        holding = ("FSDP, the student sharded over the workers, 1/" + str(w) + " of it on each"
                   if spec.training.fsdp else "data-parallel, each worker holding the whole student")
        span = (f"a trial spans {w} Ray Train workers of {r.cpus_per_trial / w:g} CPU and {r.gpus_per_trial / w:g} "
                f"GPU each ({r.cpus_per_trial:g} CPU, {r.gpus_per_trial:g} GPU in all; {holding}, gradients "
                f"averaged over {'NCCL' if r.gpus_per_trial else 'gloo'}, {r.placement_strategy})")
    if r.max_concurrent_trials:
        at_once = (f"at most {r.max_concurrent_trials} trials at once: {r.max_concurrent_trials * r.gpus_per_trial:g} "
                   "GPUs held")
    else:
        at_once = "as many trials at once as the cluster's free CPUs and GPUs fit (resources.max_concurrent_trials)"
    return f"{span}; {at_once}"


def max_concurrent(spec: SweepSpec) -> int:
    import ray

    if spec.resources.max_concurrent_trials:
        return spec.resources.max_concurrent_trials
    cpus = ray.available_resources().get("CPU", 1.0)
    by_cpu = int(cpus // spec.resources.cpus_per_trial)
    if spec.resources.gpus_per_trial:
        gpus = ray.available_resources().get("GPU", 0.0)
        by_cpu = min(by_cpu, int(gpus // spec.resources.gpus_per_trial))
    if by_cpu < 1:
        raise RuntimeError(
            f"the cluster has {cpus} CPUs and {ray.available_resources().get('GPU', 0)} GPUs free, too few for "
            f"one trial ({spec.resources.cpus_per_trial} CPU, {spec.resources.gpus_per_trial} GPU); "
            "lower resources.*_per_trial or add nodes"
        )
    return by_cpu


# ---------------------------------------------------------------- W&B


def callbacks(spec: SweepSpec) -> list:
    """One W&B run per trial (see :func:`bias_ray.tracking.trial_callbacks`)."""
    return trial_callbacks(wandb_mode(spec.tracking.wandb), spec.wandb_dir, spec.tracking.project, spec.name,
                           spec.tracking.tags, GRID_KEYS)


def log_grid_table(spec: SweepSpec, table: pd.DataFrame) -> str | None:
    """The final grid as a W&B Table, in a run of its own in the sweep's group; returns its run dir."""
    mode = wandb_mode(spec.tracking.wandb)
    if mode == "disabled" or not spec.tracking.grid_table or table.empty:
        return None
    import wandb

    run = start_run(mode, spec.wandb_dir, spec.tracking.project, f"{spec.name}-grid", "grid", group=spec.name,
                    tags=spec.tracking.tags, config={"grid_size": len(table)})
    clean = table.astype({c: str for c in table.columns if table[c].dtype == object})
    run.log({"grid": wandb.Table(dataframe=clean)})
    run.summary.update(early_stop_summary(table))
    run_dir = run.dir
    run.finish()
    return str(Path(run_dir).parent)


# ---------------------------------------------------------------- the tuner


def storage_uri(spec: SweepSpec) -> str:
    """Where Tune keeps the experiment: the spec's storage_path (local or URI), else <output_dir>/tune."""
    if not spec.storage_path:
        return str(spec.tune_dir)
    if "://" in spec.storage_path:
        return spec.storage_path.rstrip("/")
    return str(Path(spec.storage_path).expanduser().resolve())


def experiment_path(spec: SweepSpec) -> str:
    return f"{storage_uri(spec)}/{spec.name}"


def can_resume(path: str) -> bool:
    """A sweep can resume once Tune has saved its experiment state (not merely created the folder)."""
    from ray import tune

    if "://" in path:
        return tune.Tuner.can_restore(path)
    return tune.Tuner.can_restore(path) and any(Path(path).glob("experiment_state-*.json"))


def default_trainable(spec: SweepSpec):
    """One worker a trial: :func:`train_trial`; several: a Ray Train run driven from the trial."""
    return train_trial if spec.resources.workers_per_trial == 1 else trial_on_workers_trainable()


def trainable_options(spec: SweepSpec) -> dict:
    """The default trainable's arguments beside the config and the spec (where Train keeps its runs)."""
    return {} if spec.resources.workers_per_trial == 1 else {"train_storage": f"{experiment_path(spec)}-train-runs"}


def build_tuner(spec: SweepSpec, resume: bool = False, trainable=None, extra_callbacks: list | None = None,
                verbose: int = 1):
    """A new Tuner, or with ``resume`` the interrupted one restored (finished trials stay finished).

    ``extra_callbacks`` (e.g. the CLI's live view) join the W&B ones; ``verbose`` is Tune's own output.
    """
    from ray import tune

    run_spec = expand_spec(spec)
    trainable = tune.with_resources(
        tune.with_parameters(trainable or default_trainable(spec), spec_dict=dump_spec(run_spec),
                             **({} if trainable else trainable_options(spec))),
        trial_resources(spec),
    )
    path = experiment_path(spec)
    if resume and can_resume(path) and "://" not in path and (problem := experiment_state_problem(path)):
        set_aside_experiment_state(Path(path), problem)  # a broken state is never restored: the grid runs anew
    if resume and can_resume(path):
        repair_missing_checkpoints(path)  # a driver killed between Tune's checkpoint deletion and state save
        callbacks(spec)  # sets W&B's mode for the restored callback
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=param_space(run_spec),
        tune_config=tune.TuneConfig(
            metric=spec.scheduler.metric,
            mode=spec.scheduler.mode,
            scheduler=build_scheduler(spec.scheduler, default_max_t(spec)),
            max_concurrent_trials=max_concurrent(spec),
            # a finished (or early-stopped) trial's actor runs the next trial: no new process, no
            # re-import of torch/transformers/peft, and the real data parsed once per actor
            # (a multi-worker trial's process is not reused: stopping it must end its Train run)
            reuse_actors=spec.resources.workers_per_trial == 1,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=storage_uri(spec),
            callbacks=callbacks(spec) + list(extra_callbacks or []),
            failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=verbose,
        ),
    )


def experiment_state_problem(path: str) -> str | None:
    """Why Tune's saved experiment state under ``path`` cannot be restored (unreadable JSON), or None."""
    states = sorted(Path(path).glob("experiment_state-*.json"))
    try:
        state = json.loads(states[-1].read_text()) if states else {}
        if not isinstance(state, dict) or "trial_data" not in state:
            return f"{states[-1].name} holds no trial data"
    except (OSError, ValueError) as err:
        return f"{states[-1].name} is not valid JSON ({err})"
    return None


def set_aside_experiment_state(path: Path, reason: str) -> list[Path]:
    """Move Tune's unreadable experiment state into ``<experiment>/corrupt/`` with its reason.

    The grid then runs as a new experiment: every trial trains again from its config and seed (a trial
    is a function of them), so the results equal those the lost state would have led to.
    """
    aside = path / "corrupt"
    moved = []
    for f in sorted(path.glob("experiment_state-*.json")) + sorted(path.glob("*.pkl")):
        dest = aside / f"{time.strftime('%Y%m%dT%H%M%S')}-{f.name}"
        aside.mkdir(parents=True, exist_ok=True)
        f.replace(dest)
        moved.append(dest)
    note_aside(aside, {"moved": [m.name for m in moved], "reason": reason})  # one line for the state's files
    logging.getLogger("bias_ray.train").warning("the Tune experiment state under %s could not be restored (%s); "
                                                "it was moved to %s and the grid runs anew", path, reason, aside)
    return moved


# ---------------------------------------------------------------- results


def results_table(result_grid, spec: SweepSpec) -> pd.DataFrame:
    """One row per trial: grid cell, final and best metrics, steps, iterations, early stop, wall time, error."""
    metric, mode = spec.scheduler.metric, spec.scheduler.mode
    run_spec = expand_spec(spec)
    rows = []
    for result in result_grid:
        cfg = result.config or {}
        final = dict(result.metrics or {})
        history = result.metrics_dataframe
        row: dict[str, Any] = {k: cfg.get(k) for k in GRID_KEYS}
        try:
            m = run_spec.mitigation(str(cfg.get("mitigation")))
            row["mitigation_name"] = m.name
            row["mitigation_params"] = json.dumps(m.params, sort_keys=True)
        except KeyError:
            pass
        for k, v in final.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("config/"):
                row[k] = v
        if history is not None and metric in history:
            row[f"best_{metric}"] = history[metric].max() if mode == "max" else history[metric].min()
        steps = final.get("step", 0)
        total = final.get("total_steps") or trial_steps(run_spec, float(cfg.get("bias_ratio", 0.0)))
        row["steps_run"] = steps
        row["total_steps"] = total
        row["iterations"] = final.get("training_iteration", 0)
        row["max_iterations"] = trial_reports(run_spec, int(total))
        row["stopped_early"] = bool(result.error is None and steps < total)
        row["wall_time_s"] = final.get("time_total_s")
        row["error"] = None if result.error is None else error_text(result.error)
        row["trial_id"] = final.get("trial_id")
        row["trial_path"] = result.path
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(GRID_KEYS).reset_index(drop=True) if not table.empty else table


def with_copied_cells(table: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """``table`` plus a row for every cell :func:`same_cells` did not train: the trained cell's row
    under the copied cell's keys and mitigation, ``same_as`` naming the mitigation actually trained
    (empty for a trained row). A trained cell missing from the table (still to run) leaves its copies out."""
    copied = same_cells(spec)
    table = table.assign(same_as=None) if not table.empty else table
    if not copied or table.empty:
        return table
    run_spec = expand_spec(spec)
    by_key = {cell_key(r): i for i, r in table[GRID_KEYS].iterrows()}
    rows = []
    for key, trained in copied.items():
        if trained not in by_key or key in by_key:
            continue
        row = table.loc[by_key[trained]].copy()
        row[GRID_KEYS] = list(key)
        m = run_spec.mitigation(key[2])
        row["mitigation_name"], row["mitigation_params"] = m.name, json.dumps(m.params, sort_keys=True)
        row["same_as"] = trained[2]
        rows.append(row)
    table = pd.concat([table, pd.DataFrame(rows)], ignore_index=True) if rows else table
    return table.sort_values(GRID_KEYS).reset_index(drop=True)


def error_text(error: BaseException) -> str:
    """A failed trial's error as one line: the exception raised inside the trial (Ray wraps it), and its message."""
    cause = getattr(error, "cause", None) or error
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:400]


def early_stop_summary(table: pd.DataFrame) -> dict[str, Any]:
    """Trials stopped early and the compute they saved, in Tune iterations and optimizer steps."""
    if table.empty:
        return {"trials": 0}
    copies = int(table["same_as"].notna().sum()) if "same_as" in table else 0
    if copies:  # a copied cell cost nothing: the counts are the trials run
        table = table[table["same_as"].isna()]
    used, full = int(table["iterations"].sum()), int(table["max_iterations"].sum())
    steps_used, steps_full = int(table["steps_run"].sum()), int(table["total_steps"].sum())
    return {
        "trials": len(table),
        "stopped_early": int(table["stopped_early"].sum()),
        "errored": int(table["error"].notna().sum()),
        "iterations_used": used,
        "iterations_full": full,
        "iterations_saved": full - used,
        "iterations_share": used / full if full else 1.0,
        "steps_used": steps_used,
        "steps_saved": steps_full - steps_used,
        "copied_cells": copies,
    }


def write_results(table: pd.DataFrame, path: Path) -> None:
    write_frame(table, path)  # atomically (bias_ray/files.py): a crash never leaves half a results table
    write_frame(table, path.with_suffix(".csv"))


def run_sweep(spec: SweepSpec, resume: bool = False, trainable=None, extra_callbacks: list | None = None,
              verbose: int = 1) -> pd.DataFrame:
    """Run (or resume) the grid; write the results table, the early-stop summary and the W&B grid table.

    ``trainable`` replaces :func:`train_trial` (same signature), e.g. to wrap it in tests or benchmarks;
    ``extra_callbacks`` and ``verbose`` go to :func:`build_tuner`.
    """
    from bias_ray.runtime import init_ray

    init_ray()
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    check_student_tasks(spec)
    check_scheduler_metric(spec)
    if spec.training.mix_labels != "pooled":
        check_mixes(spec)
    tuner = build_tuner(spec, resume=resume, trainable=trainable, extra_callbacks=extra_callbacks, verbose=verbose)
    grid = tuner.fit()
    table = with_copied_cells(results_table(grid, spec), spec)
    write_results(table, spec.results_path)
    summary = early_stop_summary(table)
    write_json(spec.layout.sweep_summary, summary)
    log_grid_table(spec, table)
    return table
