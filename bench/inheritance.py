"""Does bias inheritance show at this scale? HateCheck false-positive rate of the trained student vs bias ratio.

Runs the trial loop in-process (:func:`bias_ray.train.trainable.fit`) for one mitigation at each
ratio and seed of a spec (default: the quickstart), then scores the trained student on HateCheck
(../shared/data/hatecheck): for the bias type's HateCheck groups (women and trans people for
gender, Muslims for religion, ...)::

    FPR = |{non-hateful case c of the groups : student predicts hate on c}| / |non-hateful cases|
    FNR = |{hateful case c of the groups : student predicts neutral on c}| / |hateful cases|

and prints mean ± sd over seeds per ratio, beside ToxiGen held-out macro-F1 and, as a control,
the FPR on the *other* groups' non-hateful cases. Inheritance: the targeted groups' FPR rising
with the ratio under ``none`` more than the control's (which rises with the label shift alone).
Figures, not a test. Example::

    PYTHONPATH=. python bench/inheritance.py --bias-type gender --ratios 0 0.5 0.9 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def hatecheck_rates(model, student, prefix: str, data_root: Path, groups: list[str],
                    untouched: set[str] | None = None) -> dict[str, float]:
    """``untouched``: the control's HateCheck groups (default: every group not targeted)."""
    from bias_ray.train.trainable import predict

    cases = pd.read_csv(data_root / "hatecheck" / "test_suite_cases.csv")
    pred = predict(model, student, [prefix + t for t in cases["test_case"].astype(str)])
    hateful = (cases["label_gold"] == "hateful").to_numpy()
    target = cases["target_ident"].isin(groups).to_numpy()
    other = cases["target_ident"].notna().to_numpy() & ~target  # control: the other groups' cases
    if untouched is not None:
        other &= cases["target_ident"].isin(untouched).to_numpy()
    return {"hatecheck_fpr": float(pred[target & ~hateful].mean()),
            "hatecheck_fnr": float(1 - pred[target & hateful].mean()),
            "hatecheck_fpr_other_groups": float(pred[other & ~hateful].mean()),
            "hatecheck_nonhateful": int((target & ~hateful).sum())}


def paired_changes(table: pd.DataFrame) -> pd.DataFrame:
    """Each ratio against the lowest, paired by seed, with 95% t intervals over seeds::

        change(m, r) = mean_s [m(r, s) - m(r0, s)]      excess = hatecheck_fpr - hatecheck_fpr_other_groups

    The change of ``excess`` is the difference-in-differences: the part of the targeted groups' change
    that the other groups (the control) do not share, i.e. not a label-balance shift.
    """
    from bias_ray.report.stats import t_interval

    table = table.assign(excess=table["hatecheck_fpr"] - table["hatecheck_fpr_other_groups"])
    base = table[table["ratio"] == table["ratio"].min()].set_index("seed")
    rows = []
    for ratio, g in table.groupby("ratio"):
        g = g.set_index("seed")
        row: dict = {"ratio": ratio}
        for metric, name in [("hatecheck_fpr", "target"), ("hatecheck_fpr_other_groups", "other"),
                             ("excess", "excess")]:
            c = t_interval((g[metric] - base[metric]).dropna())
            row[f"{name} change"] = f"{c.mean:+.3f} [{c.low:+.3f}, {c.high:+.3f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def generate_in_process(spec) -> None:
    """The pipeline's prompts, engine class and row filters without Ray; manifest with generator_measures."""
    from bias_ray.generate.engines.transformers_engine import TransformersGenerator
    from bias_ray.generate.imported import import_augmented
    from bias_ray.generate.measure import generator_measures
    from bias_ray.generate.prompts import make_plan, sampling_params
    from bias_ray.generate.quality import clean_generation, drop_reason

    plan = make_plan(spec)
    prompts = plan.rows(np.arange(plan.total))
    engine = TransformersGenerator(str(spec.models.generator), sampling_params(spec))
    texts: list[str] = []
    size = spec.generation.batch_size
    for i in range(0, len(prompts), size):
        texts += engine.generate(prompts["prompt"].iloc[i : i + size].tolist(), spec.generation.seed + i)[0]
    rows = prompts.assign(text=[clean_generation(t) for t in texts])
    rows = rows[[drop_reason(t, spec.generation.quality) == "" for t in rows["text"]]]
    rows = rows.drop_duplicates("text").rename(columns={"sample_id": "id"})
    out = import_augmented(spec, rows[["id", "text", "label", "group", "bias_type", "stance"]], source="bench")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["generator_measures"] = generator_measures(spec, out)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default="sweeps/quickstart.yaml")
    ap.add_argument("--bias-type", default="gender")
    ap.add_argument("--mitigation", default="none")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.5, 0.9])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--output-dir", default=None, help="run folder (default: the spec's)")
    ap.add_argument("--set", action="append", default=[], help="override, e.g. training.learning_rate=0.001")
    ap.add_argument("--json", default=None, help="write the per-trial rows here")
    ap.add_argument("--no-ray", action="store_true",
                    help="generate in this process (same prompts, engine class and filters; no Ray cluster)")
    args = ap.parse_args()

    from bias_ray.generate.pipeline import generate
    from bias_ray.models.ensure import prepare_models
    from bias_ray.spec import parse_spec
    from bias_ray.train.trainable import build_mitigation, build_student, fit

    raw = yaml.safe_load(Path(args.spec).read_text())
    raw["evaluation"] = {**raw.get("evaluation", {}), "tasks": [], "task_options": {}}  # HateCheck: here, once
    raw["bias_types"] = [args.bias_type]
    raw["training"] = {**raw["training"], "eval_every": 10_000}
    if args.output_dir:
        raw["output_dir"] = args.output_dir
    for item in args.set:
        key, value = item.split("=", 1)
        section, field = key.split(".", 1)
        raw.setdefault(section, {})[field] = yaml.safe_load(value)
    spec = parse_spec(raw, args.spec)
    prepare_models(spec, ["generator", "student"])  # a GGUF generator: its converted folder from here on
    started = time.time()
    if not args.no_ray:
        generate(spec, progress=False)
    elif not (spec.augmented_dir / "manifest.json").exists():  # an in-process job is reused as it is
        generate_in_process(spec)
    manifest = json.loads((spec.augmented_dir / "manifest.json").read_text())
    print(f"generation: {manifest['rows']} kept rows in {time.time() - started:.0f}s")
    for row in manifest.get("generator_measures", []):
        print("  ", row)

    from bias_ray.catalog import bias_type_catalog
    from bias_ray.evaluate.tasks.hatecheck import overlapping_groups

    bias = spec.bias_type(args.bias_type)
    groups = bias.hatecheck_groups  # the catalog's, as the hatecheck task reads them
    every = {g for entry in bias_type_catalog().values() for g in entry.get("hatecheck_groups", [])}
    untouched = every - overlapping_groups([bias])  # as the hatecheck task's control
    results = []
    for ratio in args.ratios:
        for seed in args.seeds:
            cfg = {"bias_type": args.bias_type, "bias_ratio": ratio, "mitigation": args.mitigation, "seed": seed,
                   "cpus": 1}
            states: list[dict] = []
            t0 = time.time()
            metrics = fit(spec, cfg, lambda _m, s, states=states: states.append(s))
            mitigation = build_mitigation(spec, cfg)
            student, model = build_student(spec, mitigation)
            model.load_state_dict(states[-1]["model"], strict=False)
            row = {"ratio": ratio, "seed": seed, "macro_f1": metrics["macro_f1"],
                   "realised_ratio": metrics["realised_ratio"],
                   "positive_share": round(metrics["train_positive_share"], 3), "trial_s": round(time.time() - t0, 1),
                   **hatecheck_rates(model, student, mitigation.eval_prefix(), spec.data.resolved_root, groups,
                                      untouched)}
            print(row, flush=True)
            results.append(row)
    table = pd.DataFrame(results)
    cols = ["positive_share", "hatecheck_fpr", "hatecheck_fpr_other_groups", "hatecheck_fnr", "macro_f1"]
    summary = table.groupby("ratio")[cols].agg(["mean", "std"])
    print(f"\n{args.mitigation}, {args.bias_type}, HateCheck groups {groups}, seeds {args.seeds}:")
    print(summary.round(3).to_string())
    print(paired_changes(table).to_string(index=False))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
