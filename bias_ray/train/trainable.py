"""The Ray Tune trainable: one trial = mix at a bias ratio, LoRA fine-tune, evaluate, report.

Each evaluation calls ``tune.report`` with the metrics and a checkpoint holding the trainable
weights, the optimizer and the step, so schedulers can stop weak trials and a failed or
interrupted trial resumes where it stopped. The loop itself (:func:`fit`) knows nothing of Tune:
it takes a ``report(metrics, state)`` callback and an optional state to resume from, so tests
and notebooks run it in-process.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bias_ray.data.loaders import load_toxigen
from bias_ray.evaluate.metrics import compute_all
from bias_ray.mix import mix
from bias_ray.spec import SweepSpec, parse_spec
from bias_ray.train.mitigations import MITIGATIONS, Mitigation, TrialContext
from bias_ray.train.student import StudentIO, model_inputs

STATE_FILE = "trial_state.pt"


def trial_data(spec: SweepSpec, bias_type: str, ratio: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training mix for one grid cell and the real held-out evaluation rows."""
    from bias_ray.generate.pipeline import load_augmented

    real = load_toxigen(spec.data.resolved_root, spec.data.test_fraction)
    augmented = load_augmented(spec)
    augmented = augmented[augmented["bias_type"] == bias_type]
    train = mix(real[real["split"] == "train"], augmented, ratio, spec.training.train_size,
                spec.training.mix_mode, seed)
    test = real[real["split"] == "test"]
    if spec.training.max_eval_rows:
        test = test.sample(n=min(len(test), spec.training.max_eval_rows), random_state=0)
    return train, test.reset_index(drop=True)


def build_student(spec: SweepSpec, mitigation: Mitigation) -> tuple[StudentIO, Any]:
    """The student's IO (tokenizer, encoding, class logits) and its LoRA-wrapped model.

    ``training.student_kind``: ``seq_cls`` (a classification head on the student) or ``causal_lm``
    (classification-as-generation, see :mod:`bias_ray.train.student`).
    """
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tr = spec.training
    tokenizer = AutoTokenizer.from_pretrained(spec.models.student)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    student = StudentIO(tr.student_kind, tokenizer, tr.max_length, tr.label_words, tr.prompt_suffix, tr.lm_loss)
    if tr.student_kind == "seq_cls":
        model = AutoModelForSequenceClassification.from_pretrained(spec.models.student, num_labels=2)
        task = TaskType.SEQ_CLS
    else:
        model = AutoModelForCausalLM.from_pretrained(spec.models.student)
        task = TaskType.CAUSAL_LM
    model.config.pad_token_id = tokenizer.pad_token_id
    mitigation.prepare_model(student, model)
    lora = LoraConfig(
        task_type=task,
        r=tr.lora_r,
        lora_alpha=tr.lora_alpha,
        lora_dropout=tr.lora_dropout,
        target_modules=tr.target_modules,
        modules_to_save=list(mitigation.modules_to_save) or None,
        trainable_token_indices=list(mitigation.trainable_token_indices) or None,
    )
    return student, get_peft_model(model, lora)


def trainable_parameter_count(model) -> int:
    """Parameters the optimizer updates (LoRA, head, trainable token rows): logged so mitigations compare fairly."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def predict(model, student: StudentIO, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Predicted labels (argmax of the class logits) for ``texts``."""
    import torch

    model.eval()
    preds = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = student.encode(texts[i : i + batch_size])
            logits = model(**model_inputs(batch)).logits
            preds.append(student.class_logits(logits, batch).argmax(-1).cpu().numpy())
    model.train()
    return np.concatenate(preds) if preds else np.array([], dtype=int)


def evaluate_rows(model, student: StudentIO, test: pd.DataFrame, groups: list[str]) -> dict[str, float]:
    """Task metrics on all test rows; fairness gaps across the bias type's groups and across all."""
    y_pred = predict(model, student, test["text"].astype(str).tolist())
    y_true = test["label"].to_numpy()
    g = test["group"].to_numpy()
    out = compute_all(y_true, y_pred, g)
    in_type = np.isin(g, groups)
    if in_type.sum():
        for name, value in compute_all(y_true[in_type], y_pred[in_type], g[in_type]).items():
            out[f"bias_type/{name}"] = value
    return out


def downstream_metrics(spec: SweepSpec, model, student: StudentIO, mitigation: Mitigation, bias, seed: int) -> dict:
    """The spec's downstream tasks (``task/<task>/<metric>``) on the trained student, once per trial.

    Likelihood and generation tasks need a language-model head: a causal-LM student is used as it
    is (LoRA merged into a copy); a classifier's trained body is copied into the student's causal LM.
    """
    ev = spec.evaluation
    if not ev.tasks or not ev.in_trials:
        return {}
    import copy

    from bias_ray.evaluate import run_tasks
    from bias_ray.evaluate.lm import causal_lm_from_classifier

    if spec.training.student_kind == "causal_lm":
        lm = copy.deepcopy(model).merge_and_unload()
    else:
        lm = causal_lm_from_classifier(model, spec.models.student)
    return run_tasks(lm, student.tokenizer, None, spec, bias_types=[bias], seed=seed,
                     prompt_prefix=mitigation.eval_prefix())


def trial_device(spec: SweepSpec) -> str:
    """``cuda`` when the trial was given a GPU (Tune sets CUDA_VISIBLE_DEVICES to it), else ``cpu``."""
    import torch

    return "cuda" if spec.resources.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"


Report = Callable[[dict[str, Any], dict[str, Any]], None]


def build_mitigation(spec: SweepSpec, config: dict[str, Any]) -> Mitigation:
    """The trial's mitigation, set up for its bias type."""
    m_spec = spec.mitigation(config["mitigation"])
    mitigation = MITIGATIONS.get(m_spec.name)(**m_spec.params)
    bias = spec.bias_type(config["bias_type"])
    tr = spec.training
    mitigation.setup(TrialContext(bias_type=bias.name, groups=list(bias.groups), student_kind=tr.student_kind))
    return mitigation


def fit(spec: SweepSpec, config: dict[str, Any], report: Report, state: dict[str, Any] | None = None) -> dict:
    """Train one grid cell, calling ``report(metrics, state)`` every ``eval_every`` steps and at the end.

    Uses ``config["cpus"]`` torch threads (default 1). ``state`` (as passed to ``report``) resumes
    the run: trainable weights, optimizer and step. The batch order is a function of (seed, epoch)
    only, so a resumed run sees the batches it would have seen. Returns the last metrics.
    """
    import torch

    torch.set_num_threads(max(1, int(config.get("cpus", 1))))  # more threads than CPUs thrash on small models
    seed = int(config["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed)
    mitigation = build_mitigation(spec, config)
    bias = spec.bias_type(config["bias_type"])

    train, test = trial_data(spec, bias.name, float(config["bias_ratio"]), seed)
    realised_ratio = float(train["is_augmented"].mean())
    train = mitigation.transform_train(train)
    test = mitigation.transform_eval(test)
    student, model = build_student(spec, mitigation)
    student.device = trial_device(spec)
    model.to(student.device)
    tr = spec.training
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tr.learning_rate)
    trainable_params = trainable_parameter_count(model)

    steps_per_epoch = math.ceil(len(train) / tr.batch_size)
    total_steps = steps_per_epoch * tr.epochs
    step = 0
    if state:
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        if "torch_rng" in state:  # dropout draws continue where they stopped: a resumed run is exact
            torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and student.device == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"])
    start_step = step

    started = time.time()
    losses: list[float] = []
    metrics: dict[str, Any] = {}
    model.train()
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        order = np.random.default_rng(seed + epoch).permutation(len(train))
        idx = order[offset * tr.batch_size : (offset + 1) * tr.batch_size]
        rows = train.iloc[idx]
        batch = student.encode(rows["text"].astype(str).tolist(), rows["label"].tolist())
        batch = mitigation.transform_batch(batch, rows)
        outputs = model(**model_inputs(batch))
        loss = outputs.loss
        extra = mitigation.extra_loss(model, batch, outputs, rows)
        if extra is not None:
            loss = loss + extra
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % tr.eval_every == 0 or step == total_steps:
            metrics = evaluate_rows(model, student, test, bias.groups)
            if step == total_steps:
                metrics.update(downstream_metrics(spec, model, student, mitigation, bias, seed))
            metrics.update(
                step=step,
                start_step=start_step,
                epoch=step / steps_per_epoch,
                train_loss=float(np.mean(losses)) if losses else float("nan"),
                realised_ratio=realised_ratio,
                train_rows=len(train),
                total_steps=total_steps,
                trial_wall_s=time.time() - started,
                trainable_params=trainable_params,
                **mitigation.stats(),
            )
            losses = []
            trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            rng = {"torch_rng": torch.get_rng_state()}
            if student.device == "cuda":
                rng["cuda_rng"] = torch.cuda.get_rng_state()
            report(metrics, {"model": trainable, "optimizer": optimizer.state_dict(), "step": step, **rng})
    return metrics


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
    replaces :func:`tune_report` (tests wrap it to inject a crash after a checkpoint).
    """
    import torch
    from ray import tune

    from bias_ray.runtime import quiet_libraries

    quiet_libraries()
    spec = parse_spec(spec_dict, check_files=False)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, weights_only=False, map_location="cpu")
    fit(spec, config, report or tune_report, state)
