"""The Ray Tune trainable: one trial = mix at a bias ratio, LoRA fine-tune, evaluate, report.

Each evaluation calls ``tune.report`` with the metrics and a checkpoint holding the trainable
weights, the optimizer and the step, so schedulers can stop weak trials and a failed or
interrupted trial resumes where it stopped. The loop itself (:func:`fit`) knows nothing of Tune:
it takes a ``report(metrics, state)`` callback and an optional state to resume from, so tests
and notebooks run it in-process.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bias_ray.files import note_aside, put_aside
from bias_ray.measures.metrics import (
    BINARY_METRICS,
    BINARY_SCORE_METRICS,
    MULTICLASS_METRICS,
    MULTICLASS_SCORE_METRICS,
    compute_all,
    compute_scores,
    per_group_accuracy,
)
from bias_ray.mix import STRATA, assemble_mix, mix_counts, mix_plan
from bias_ray.mix.checks import real_rows
from bias_ray.models.precision import grad_scaler
from bias_ray.spec import SweepSpec, parse_spec
from bias_ray.train.collective import LOCAL, Collective, split_step
from bias_ray.train.mitigations import MITIGATIONS, Mitigation, TrialContext
from bias_ray.train.student import StudentIO, model_inputs

STATE_FILE = "trial_state.pt"


def trial_data(spec: SweepSpec, bias_type: str, ratio: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training mix for one grid cell and the real held-out evaluation rows.

    Reads only what the trial uses: the strata (label, group) of its bias type's augmented rows,
    then the texts of the rows the seeded mix drew. The draw is the one :func:`bias_ray.mix.mix`
    makes over the full augmented frame, so the mix is the same as reading everything.
    """
    from bias_ray.augmented import augmented_rows, augmented_strata

    real = real_rows(spec.data.model_dump_json())
    real_train = real[real["split"] == "train"]
    tr = spec.training
    counts = mix_counts(ratio, tr.train_size, tr.mix_mode)
    strata = augmented_strata(spec, bias_type) if counts.augmented else pd.DataFrame(columns=["index", *STRATA])
    plan = mix_plan(real_train, strata, ratio, tr.train_size, tr.mix_mode, seed, tr.mix_labels)
    augmented = augmented_rows(spec, strata["index"].to_numpy()[plan.augmented])
    train = assemble_mix(real_train.iloc[plan.real], augmented, plan.order)
    test = real[real["split"] == "test"]
    if spec.training.max_eval_rows:
        test = test.sample(n=min(len(test), spec.training.max_eval_rows), random_state=0)
    return train, test.reset_index(drop=True)


def build_student(spec: SweepSpec, mitigation: Mitigation) -> tuple[StudentIO, Any]:
    """The student's IO (tokenizer, encoding, class logits) and its LoRA-wrapped model (``training.finetune:
    full``: the model itself, every weight trainable).

    ``training.student_kind``: ``seq_cls`` (a classification head on the student) or ``causal_lm``
    (classification-as-generation, see :mod:`bias_ray.train.student`). The base weights load in
    ``models.dtype``; the trainable ones are float32 (mixed precision, see models/precision.py).
    ``training.gradient_checkpointing`` recomputes activations in the backward pass.
    """
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from bias_ray.models.precision import load_dtype, trainable_to_float32

    tr = spec.training
    tokenizer = AutoTokenizer.from_pretrained(spec.models.student)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    student = StudentIO(tr.student_kind, tokenizer, tr.max_length, tr.words(spec.data.labels), tr.prompt_suffix,
                        tr.lm_loss)
    dtype = load_dtype(spec.models.dtype)
    if tr.student_kind == "seq_cls":  # a head of 2 (0/1) or of the K named classes (data.labels)
        model = AutoModelForSequenceClassification.from_pretrained(
            spec.models.student, num_labels=len(spec.data.labels or [0, 1]), dtype=dtype)
        task = TaskType.SEQ_CLS
    else:
        model = AutoModelForCausalLM.from_pretrained(spec.models.student, dtype=dtype)
        task = TaskType.CAUSAL_LM
    model.config.pad_token_id = tokenizer.pad_token_id
    student.dtype = model.dtype  # the base weights' dtype: the compute dtype under autocast
    if tr.gradient_checkpointing:
        # non-reentrant: works with a frozen embedding (LoRA) without forcing input grads
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    mitigation.prepare_model(student, model)
    if tr.finetune == "full":  # every weight trains, in float32 (master weights; autocast computes in dtype)
        trainable_to_float32(model)
        return student, model
    lora = LoraConfig(
        task_type=task,
        r=tr.lora_r,
        lora_alpha=tr.lora_alpha,
        lora_dropout=tr.lora_dropout,
        target_modules=tr.target_modules,
        modules_to_save=list(mitigation.modules_to_save) or None,
        trainable_token_indices=list(mitigation.trainable_token_indices) or None,
    )
    model = get_peft_model(model, lora)
    trainable_to_float32(model)
    return student, model


def trainable_parameter_count(model) -> int:
    """Parameters the optimizer updates (LoRA, head, trainable token rows): logged so mitigations compare fairly."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def class_probabilities(model, student: StudentIO, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """``[N, C]`` softmax of the class logits for ``texts`` (autocast like training, see models/precision.py).

    Batches are formed in order of text length, so a batch pads its texts to about their own length rather
    than to the longest of a random draw (22% less time on the quickstart's held-out ToxiGen rows); rows come
    back in the order given. Padding is masked, so a row's probabilities do not depend on its batch (up to
    float rounding, ~1e-7).
    """
    import torch

    from bias_ray.models.precision import autocast

    model.eval()
    order = np.argsort(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), kind="stable")
    probs = []
    # no_grad, not inference_mode: a sharded (FSDP2) student's weights, gathered in inference mode, could not
    # train on afterwards
    with torch.no_grad(), autocast(student.device, student.dtype):
        for i in range(0, len(texts), batch_size):
            batch = student.encode([texts[k] for k in order[i : i + batch_size]])
            logits = model(**model_inputs(batch)).logits
            probs.append(torch.softmax(student.class_logits(logits, batch).float(), -1).cpu().numpy())
    model.train()
    if not probs:
        return np.zeros((0, 2))
    out = np.empty_like(probs[0], shape=(len(texts), probs[0].shape[1]))
    out[order] = np.concatenate(probs)
    return out


def predict(model, student: StudentIO, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Predicted labels (argmax of the class probabilities) for ``texts``."""
    return class_probabilities(model, student, texts, batch_size).argmax(-1)


def evaluate_rows(model, student: StudentIO, test: pd.DataFrame, groups: list[str],
                  named_classes: bool = False) -> dict[str, float]:
    """Task metrics on all test rows; fairness gaps across the bias type's groups and across all.

    Every task also gets the held-out ``log_loss``, and a 0/1 task ``roc_auc`` (score metrics of the class
    probabilities, which rank trials before their predicted labels move; measures/metrics.py).
    A 0/1 task gets the rate gaps (FPR, FNR, positive predictions); a task of named classes
    (``named_classes``, data.labels: Bias in Bios' occupations) the accuracy gap, and each group of the
    test rows its accuracy (``accuracy/<group>``, the paper's accuracy per gender, in every grid cell:
    a culture cell's student is still read by gender on Bias in Bios).
    """
    probs = class_probabilities(model, student, test["text"].astype(str).tolist())
    y_pred = probs.argmax(-1)
    y_true = test["label"].to_numpy()
    g = test["group"].to_numpy()
    names = MULTICLASS_METRICS if named_classes else BINARY_METRICS
    out = compute_all(y_true, y_pred, g, names)
    out.update(compute_scores(y_true, probs, MULTICLASS_SCORE_METRICS if named_classes else BINARY_SCORE_METRICS))
    in_type = np.isin(g, groups)
    if in_type.sum():
        for name, value in compute_all(y_true[in_type], y_pred[in_type], g[in_type], names).items():
            out[f"bias_type/{name}"] = value
    if named_classes:
        out.update({f"accuracy/{group}": value for group, value in per_group_accuracy(y_true, y_pred, g).items()})
    return out


def downstream_metrics(spec: SweepSpec, model, student: StudentIO, mitigation: Mitigation, bias, seed: int) -> dict:
    """The spec's downstream tasks (``task/<task>/<metric>``) on the trained student, once per trial.

    Likelihood and generation tasks need a language-model head: a causal-LM student is used as it
    is (LoRA merged into a copy); a classifier's trained body is copied into the student's causal LM.
    Classifier tasks (HateCheck) get the trained classifier itself, on text after the mitigation's
    evaluation transform, as the trial's own evaluation sees it.
    """
    ev = spec.evaluation
    if not ev.tasks or not ev.in_trials:
        return {}
    import copy

    from bias_ray.catalog import task_listing
    from bias_ray.evaluate import run_tasks
    from bias_ray.measures.lm import causal_lm_from_classifier

    entries = task_listing()["tasks"]
    if all(entries.get(t, {}).get("kind") == "classifier" for t in ev.tasks):
        lm = None  # classifier tasks only: they run on `classify`; an encoder student has no LM to build
    elif spec.training.student_kind == "causal_lm":
        lm = copy.deepcopy(model)
        lm = lm.merge_and_unload() if hasattr(lm, "merge_and_unload") else lm  # finetune: full has no adapter
    else:
        lm = causal_lm_from_classifier(model, spec.models.student, dtype=student.dtype)
    if lm is not None and student.dtype is not None:  # float32 trained modules join the base's dtype: one dtype
        lm = lm.to(student.dtype)

    def shown(texts: list[str]) -> list[str]:  # the text as the trial's own evaluation sees it
        return mitigation.transform_eval(pd.DataFrame({"text": texts}))["text"].tolist()

    def classify(texts: list[str]) -> np.ndarray:
        return predict(model, student, shown(texts))

    def score(texts: list[str]) -> np.ndarray:  # P(hate): HateCheck ranks cases by it (target_excess_auc)
        return class_probabilities(model, student, shown(texts))[:, 1]

    return run_tasks(lm, student.tokenizer, None, spec, bias_types=[bias], seed=seed,
                     prompt_prefix=mitigation.eval_prefix(), classify=classify, score=score)


def trial_device(spec: SweepSpec) -> str:
    """``cuda`` when the trial was given a GPU (Tune sets CUDA_VISIBLE_DEVICES to it), else ``cpu``."""
    import torch

    return "cuda" if spec.resources.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"


Report = Callable[[dict[str, Any], dict[str, Any]], None]


def build_mitigation(spec: SweepSpec, config: dict[str, Any], collective: Collective = LOCAL) -> Mitigation:
    """The trial's mitigation, set up for its bias type (and, on several workers, for their collectives)."""
    m_spec = spec.mitigation(config["mitigation"])
    mitigation = MITIGATIONS.get(m_spec.name)(**m_spec.params)
    bias = spec.bias_type(config["bias_type"])
    tr = spec.training
    mitigation.setup(TrialContext(bias_type=bias.name, groups=list(bias.groups), student_kind=tr.student_kind,
                                    lexicon_name=bias.base_name, collective=collective))
    return mitigation


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """The learning rate's multiplier for optimizer step ``step`` (0-based) of ``total_steps``.

    With ``p = step / total_steps``: ``constant`` 1; ``linear`` ``1 - p``; ``cosine``
    ``(1 + cos(pi p)) / 2``. A decayed rate settles the weights over the last steps, so a trial's
    final evaluation measures its config rather than where the last few noisy steps left it (at a
    constant rate the grid's best config by the last evaluation can change from one evaluation
    to the next; ``bench/early_stop_signal.py`` shows it). A function of the step only: a
    resumed trial gets the same rates.
    """
    p = min(max(step / total_steps, 0.0), 1.0) if total_steps else 0.0
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - p
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"unknown lr_schedule {schedule!r}; allowed: constant, linear, cosine")


class NonFiniteLoss(FloatingPointError):
    """A trial's training loss became NaN or infinite: the trial stops at once (its retries stop there too)."""


def fit(spec: SweepSpec, config: dict[str, Any], report: Report, state: dict[str, Any] | None = None,
        collective: Collective = LOCAL) -> dict:
    """Train one grid cell, calling ``report(metrics, state)`` every ``eval_every`` steps and at the end.

    Uses ``config["cpus"]`` torch threads (default 1). ``state`` (as passed to ``report``) resumes
    the run: trainable weights, optimizer and step. A step is one optimizer step over
    ``training.rows_per_step`` rows (``gradient_accumulation_steps`` micro-batches); steps,
    ``eval_every`` and checkpoints count optimizer steps, so a checkpoint never holds a half
    accumulated gradient. The learning rate follows ``training.lr_schedule`` (:func:`lr_factor`).
    The batch order is a function of (seed, epoch) only, so a resumed run
    sees the batches it would have seen. Returns the last metrics.

    On several workers (``collective``, see :mod:`bias_ray.train.collective`) every worker runs this loop on
    the same mix; a step's rows are dealt over them (trimmed to a multiple of the workers), the gradients
    averaged, and rank 0 alone evaluates (sharded, ``training.fsdp``, every worker evaluates, since a sharded
    forward needs them all, and rank 0 reports). Every worker calls ``report`` (Ray Train's report is a
    barrier); the others pass empty metrics.
    """
    import torch

    torch.set_num_threads(max(1, int(config.get("cpus", 1))))  # more threads than CPUs thrash on small models
    seed = int(config["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed)
    mitigation = build_mitigation(spec, config, collective)
    bias = spec.bias_type(config["bias_type"])

    clock = time.perf_counter()  # start-up parts, reported with every metric (bench/early_stop.py sums them)
    train, test = trial_data(spec, bias.name, float(config["bias_ratio"]), seed)
    startup = {"startup/data_s": time.perf_counter() - clock}
    realised_ratio = float(train["is_augmented"].mean())
    # the mix's label balance (training.mix_labels); a task of named classes has no positive label
    positive_share = float("nan") if spec.data.labels else float(train["label"].mean())
    train = mitigation.transform_train(train)
    test = mitigation.transform_eval(test)
    clock = time.perf_counter()
    student, model = build_student(spec, mitigation)
    student.device = trial_device(spec)
    if collective.sharded:  # training.fsdp: block by block onto this worker's device, 1/W of each kept there
        model = collective.shard(model, student.device)
    else:
        model.to(student.device)
    startup["startup/model_s"] = time.perf_counter() - clock
    tr = spec.training
    trained = [p for p in model.parameters() if p.requires_grad]
    trained_names = [n for n, p in model.named_parameters() if p.requires_grad]  # the checkpoint's keys
    optimizer = torch.optim.AdamW(trained, lr=tr.learning_rate)
    scaler = grad_scaler(student.device, student.dtype)
    trainable_params = trainable_parameter_count(model)

    steps_per_epoch = math.ceil(len(train) / tr.rows_per_step)
    total_steps = steps_per_epoch * tr.epochs
    step = 0
    if state:
        collective.load_trainable_state(model, optimizer, trained_names, state["model"], state["optimizer"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        if "torch_rng" in state and collective.is_local:  # dropout draws continue where they stopped: exact
            torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and student.device == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"])
    start_step = step
    if not collective.is_local:  # the weights start alike on every worker; the dropout draws differ
        torch.manual_seed(seed * 1_000_003 + collective.rank * 7_919 + step)

    started = time.time()
    losses: list[float] = []
    metrics: dict[str, Any] = {}
    model.train()
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        order = np.random.default_rng(seed + epoch).permutation(len(train))
        rows = train.iloc[order[offset * tr.rows_per_step : (offset + 1) * tr.rows_per_step]]
        if not collective.is_local:  # every worker needs a row of every micro-batch
            rows = rows.iloc[: len(rows) - len(rows) % collective.world_size]
        for group in optimizer.param_groups:
            group["lr"] = tr.learning_rate * lr_factor(tr.lr_schedule, step, total_steps)
        optimizer.zero_grad()
        share = accumulate_gradients(model, student, mitigation, rows, tr.batch_size, scaler, collective)
        losses.append(collective.average_gradients(trained, share))
        if not math.isfinite(losses[-1]) and not scaler.is_enabled():  # fp16's scaler skips such steps itself
            raise NonFiniteLoss(
                f"trial {config['bias_type']} ratio={config['bias_ratio']} {config['mitigation']} seed={seed}: the "
                f"training loss is {losses[-1]} at step {step + 1}; it stops here instead of training on. Lower "
                f"training.learning_rate (now {tr.learning_rate:g}), check the mitigation's lambda, or use "
                "models.dtype float32")
        scaler.step(optimizer)
        scaler.update()
        step += 1
        if step % tr.eval_every == 0 or step == total_steps:
            mitigation_stats = mitigation.merged_stats()  # every worker takes part
            if collective.is_leader or collective.every_worker_forwards:  # sharded: all run the forwards alike
                metrics = evaluate_rows(model, student, test, bias.groups, bool(spec.data.labels))
                if step == total_steps:
                    metrics.update(downstream_metrics(spec, model, student, mitigation, bias, seed))
            if collective.is_leader or collective.sharded:  # sharded, a gather: every worker takes part
                weights, optimizer_state = collective.trainable_state(model, optimizer, trained_names)
            if not collective.is_leader:
                losses = []
                report({}, {})
                continue
            metrics.update(
                step=step,
                start_step=start_step,
                epoch=step / steps_per_epoch,
                train_loss=float(np.mean(losses)) if losses else float("nan"),
                realised_ratio=realised_ratio,
                train_positive_share=positive_share,
                train_rows=len(train),
                total_steps=total_steps,
                trial_wall_s=time.time() - started,
                **startup,
                trainable_params=trainable_params,
                **mitigation_stats,
                **({} if collective.is_local else {"trial_workers": collective.world_size}),
            )
            losses = []
            rng = {"torch_rng": torch.get_rng_state()}
            if student.device == "cuda":
                rng["cuda_rng"] = torch.cuda.get_rng_state()
            extra_state = {"scaler": scaler.state_dict()} if scaler.is_enabled() else {}
            report(metrics, {"model": weights, "optimizer": optimizer_state, "step": step, **rng,
                             **extra_state})
    return metrics


def accumulate_gradients(model, student: StudentIO, mitigation: Mitigation, rows: pd.DataFrame, micro_batch: int,
                         scaler: Any = None, collective: Collective = LOCAL) -> float:
    """Forward and backward ``rows`` (one optimizer step) in micro-batches of ``micro_batch`` rows.

    Micro-batch ``k`` of ``n_k`` rows adds the gradient of ``loss_k * n_k / N`` (``N = len(rows)``),
    so the sum is the gradient of the row-weighted mean loss, that of one batch of all ``N`` rows
    when the loss is a mean over rows (classification, ``lm_loss: answer``; a token-mean LM loss
    weights rows slightly differently). Forward passes run under autocast in the student's dtype.
    Returns the step's loss (the same weighted mean).

    On ``W`` workers ``rows`` are the whole step's rows and this worker takes its share of each micro-batch
    (:func:`bias_ray.train.collective.split_step`). It back-propagates ``W * share``, with ``share = loss_k *
    n_k / N + extra_k * c_k / N`` (``n_k`` its rows of micro-batch ``k``, ``c_k`` the micro-batch's rows on all
    workers, ``extra_k`` its share of the mitigation's step-wide term), so the average of the workers'
    gradients is the one-worker step's gradient; returns ``share`` (the shares sum to the step's loss).
    """
    from bias_ray.models.precision import autocast

    total, step_loss = len(rows), 0.0
    w = collective.world_size
    for positions, micro_rows in split_step(total, micro_batch, collective):
        part = rows.iloc[positions]
        with autocast(student.device, student.dtype):
            batch = student.encode(part["text"].astype(str).tolist(), part["label"].tolist())
            batch = mitigation.transform_batch(batch, part)
            outputs = model(**model_inputs(batch), **mitigation.forward_kwargs())
            loss = outputs.loss
            extra = mitigation.extra_loss(model, batch, outputs, part)
            if collective.is_local:
                if extra is not None:
                    loss = loss + extra
                weighted = loss.float() * (len(part) / total)
                share = weighted
            else:
                share = loss.float() * (len(part) / total)
                if extra is not None:
                    share = share + extra.float() * (micro_rows / total)
                weighted = share * w
        (scaler.scale(weighted) if scaler is not None else weighted).backward()
        step_loss += float(share.detach())
    return step_loss


def tune_report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
    """Report to Tune with a checkpoint holding ``state``."""
    import torch
    from ray import tune

    with tempfile.TemporaryDirectory() as d:
        torch.save(state, os.path.join(d, STATE_FILE))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def train_trial(config: dict[str, Any], spec_dict: dict[str, Any], report: Report | None = None) -> None:
    """Tune function trainable for one grid cell (bias_ratio, bias_type, mitigation, seed).

    Resumes from ``tune.get_checkpoint()`` when Tune restarts a failed trial or a sweep. ``report``
    replaces :func:`tune_report` (tests wrap it to inject a crash after a checkpoint). A trial on several
    workers is :func:`bias_ray.train.distributed.trial_on_workers_trainable`.
    """
    from ray import tune

    from bias_ray.runtime import quiet_libraries

    quiet_libraries()
    spec = parse_spec(spec_dict, check_files=False)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = load_state(Path(d) / STATE_FILE, spec.run_dir / "corrupt", config)
    fit(spec, config, report or tune_report, state)


def cell_name(config: dict[str, Any]) -> str:
    """A trial's grid cell as one name, ``bias_type-bias_ratio-mitigation-seed`` (file names, logs, Train runs)."""
    return "-".join(str(config.get(k)) for k in ("bias_type", "bias_ratio", "mitigation", "seed"))


def load_state(path: Path, aside: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """A trial's checkpointed state, or None (train from the start) when the file is broken.

    A broken file (a node lost while it was written to shared storage, a disk that filled) is
    copied into ``aside`` with its reason, and the trial trains from step 0: Tune keeps one
    checkpoint per trial, so there is no older good one, and a trial is a function of its config and
    seed, so the redone trial ends where the lost one would have.
    """
    import torch

    try:
        state = torch.load(path, weights_only=False, map_location="cpu")
        if not isinstance(state, dict) or "model" not in state or "step" not in state:
            raise ValueError("it lacks the model weights or the step")
        return state
    except Exception as err:
        cell = cell_name(config)
        reason = f"{type(err).__name__}: {str(err)[:200]}"
        if path.exists():
            put_aside(path, aside, f"{cell}-{path.name}", {"file": str(path), "reason": reason}, copy=True)
        else:
            note_aside(aside, {"file": str(path), "reason": reason})
        logging.getLogger("bias_ray.train").warning("trial %s: checkpoint %s is broken (%s); it trains from the "
                                                    "start", cell, path, reason)
        return None
