"""Time the downstream tasks of ``run_tasks`` on a causal LM (default: the project's tiny model).

Prints the wall time of each task and of the stance classifier's first fit, so the cost of
evaluating at the end of every trial can be budgeted; ``--show`` also prints the scores whose key
contains one of the given words. Examples:

    PYTHONPATH=. python bench/eval_tasks.py --rows 100 --bias-types religion disability
    PYTHONPATH=. python bench/eval_tasks.py --model packaged:smollm2-135m-instruct --bias-types culture \
        --tasks recruitment salary story --options '{"recruitment": {"names": "paper"}}' --show gap rate
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="Causal LM folder; default: build the tiny model in a temp dir")
    ap.add_argument("--rows", type=int, default=100, help="evaluation.max_rows_per_task")
    ap.add_argument("--generations", type=int, default=2, help="evaluation.generations_per_group")
    ap.add_argument("--bias-types", nargs="+", default=["religion"])
    ap.add_argument("--tasks", nargs="+", default=None)
    ap.add_argument("--options", default="{}", help="evaluation.task_options as JSON")
    ap.add_argument("--show", nargs="*", default=[], help="print the scores whose key contains one of these")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bias_ray.evaluate import run_tasks
    from bias_ray.measures.classifier import toxigen_classifier
    from bias_ray.models import build_tiny_model
    from bias_ray.runtime import quiet_libraries
    from bias_ray.spec import EvaluationSpec, default_data_root

    quiet_libraries()
    root = default_data_root()
    if args.model and args.model.startswith("packaged:"):
        from bias_ray.models.gguf import ensure_converted
        from bias_ray.models.packaged import packaged_path

        args.model = str(ensure_converted(str(packaged_path(args.model))))
    path = Path(args.model) if args.model else build_tiny_model(Path(tempfile.mkdtemp()) / "tiny", root)
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    settings = EvaluationSpec(max_rows_per_task=args.rows, generations_per_group=args.generations,
                              **({"tasks": args.tasks} if args.tasks else {}), task_options=json.loads(args.options))
    print(f"model {path}; torch threads {torch.get_num_threads()}; rows/task {args.rows}; "
          f"bias types {args.bias_types}")
    started = time.time()
    clf = toxigen_classifier(str(root), settings.encoder, settings.classifier_epochs, settings.classifier_l2)
    print(f"stance classifier ready in {time.time() - started:.1f} s (cached on disk after the first fit); "
          f"held-out accuracy {clf.metrics['test_accuracy']:.3f}, macro-F1 {clf.metrics['test_macro_f1']:.3f}")
    out = run_tasks(model, tok, args.tasks, settings, bias_types=args.bias_types, data_root=root)
    for key in sorted(k for k in out if k.endswith("/wall_s")):
        task = key.split("/")[1]
        print(f"{task:12s} rows {out.get(f'task/{task}/n', float('nan')):6.0f}  wall {out[key]:7.2f} s")
    for key in sorted(k for k in out if any(word in k for word in args.show)):
        print(f"  {key} = {out[key]:.4f}")


if __name__ == "__main__":
    main()
