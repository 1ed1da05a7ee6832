"""Trial loop speed with the real student (bench, not a test): bias-ray's ``fit`` against a bare peft loop.

Both train the quickstart's student (all-MiniLM-L6-v2 + the same LoRA config and head) on the same mixed
rows (``trial_data`` of one grid cell), in the same batch order, with the same optimizer, threads and
``max_length``, then classify the same held-out rows once. ``fit`` also does what a trial does: the
mitigation hooks, a report with a checkpoint (trainable weights and optimizer state, ``torch.save``\\d as
``tune_report`` does) every ``eval_every`` steps and the evaluation that goes with it. Timed: from the first
training step to the end of the last evaluation; model loading is timed apart (it is start-up).
Runs are interleaved (bare, fit, bare, fit, ...) so drift on a shared machine hits both alike.

    PYTHONPATH=. python bench/trial_speed.py --spec sweeps/quickstart.yaml --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def bare_loop(spec, train, test) -> tuple[float, int]:
    """A plain peft + torch training loop over ``train`` and one classification pass over ``test``."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tr = spec.training
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(spec.models.student)
    model = AutoModelForSequenceClassification.from_pretrained(spec.models.student, num_labels=2)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=tr.lora_r, lora_alpha=tr.lora_alpha,
                                             lora_dropout=tr.lora_dropout, target_modules=tr.target_modules))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tr.learning_rate)
    steps_per_epoch = math.ceil(len(train) / tr.batch_size)
    texts, labels = train["text"].astype(str).tolist(), train["label"].to_numpy()
    started = time.perf_counter()
    model.train()
    for epoch in range(tr.epochs):
        order = np.random.default_rng(epoch).permutation(len(train))
        for k in range(steps_per_epoch):
            idx = order[k * tr.batch_size : (k + 1) * tr.batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=tr.max_length,
                      return_tensors="pt")
            out = model(**enc, labels=torch.tensor(labels[idx]))
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    model.eval()
    with torch.inference_mode():
        test_texts = test["text"].astype(str).tolist()
        for i in range(0, len(test_texts), 64):
            enc = tok(test_texts[i : i + 64], padding=True, truncation=True, max_length=tr.max_length,
                      return_tensors="pt")
            model(**enc).logits.argmax(-1)
    return time.perf_counter() - started, steps_per_epoch * tr.epochs


def bias_ray_loop(spec, config) -> tuple[float, int, float]:
    """``fit`` with a report that checkpoints as ``tune_report`` does; (loop seconds, steps, model start-up s)."""
    import torch

    from bias_ray.train.trainable import fit

    def report(metrics, state):
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, os.path.join(d, "state.pt"))

    last = fit(spec, config, report)
    return float(last["trial_wall_s"]), int(last["total_steps"]), float(last["startup/model_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="sweeps/quickstart.yaml")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a quickstart trial has 1)")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="override training.eval_every (e.g. the trial's step count: one evaluation, as the bare loop)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from bias_ray.models.ensure import prepare_models
    from bias_ray.spec import parse_spec
    from bias_ray.train.trainable import trial_data

    raw = yaml.safe_load(Path(args.spec).read_text())
    raw["evaluation"] = {**raw.get("evaluation", {}), "tasks": [], "task_options": {}}  # the loop, not HateCheck
    if args.eval_every:
        raw["training"]["eval_every"] = args.eval_every
    spec = parse_spec(raw, args.spec)
    prepare_models(spec, ["student"])
    if not (spec.augmented_dir / "manifest.json").exists():
        raise SystemExit(f"no augmented data at {spec.augmented_dir}: run `bias-ray generate {args.spec}` first")
    bias = spec.bias_type_specs[0].name
    config = {"bias_type": bias, "bias_ratio": args.ratio, "mitigation": "none", "seed": 0, "cpus": args.threads}
    train, test = trial_data(spec, bias, args.ratio, 0)
    torch.set_num_threads(args.threads)
    rows = []
    for r in range(args.repeats):
        bare_s, steps = bare_loop(spec, train, test)
        ours_s, our_steps, startup = bias_ray_loop(spec, config)
        torch.set_num_threads(args.threads)
        row = {"repeat": r, "steps": steps, "bare_s": round(bare_s, 2), "fit_s": round(ours_s, 2),
               "bare_steps_per_s": round(steps / bare_s, 3), "fit_steps_per_s": round(our_steps / ours_s, 3),
               "ratio": round((our_steps / ours_s) / (steps / bare_s), 3), "fit_model_startup_s": round(startup, 2)}
        print(row, flush=True)
        rows.append(row)
    ratios = [r["ratio"] for r in rows]
    print(f"\n{spec.models.student}: {len(train)} rows x {spec.training.epochs} epochs, batch "
          f"{spec.training.batch_size}, max_length {spec.training.max_length}, {args.threads} thread(s), "
          f"eval every {spec.training.eval_every} steps; fit / bare steps per second: median "
          f"{statistics.median(ratios):.3f} (runs {', '.join(f'{x:.3f}' for x in ratios)})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
