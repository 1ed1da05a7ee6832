"""Time the HateCheck task as a trial runs it: 3,728 cases through the trial's classifier.

Calls ``downstream_metrics`` (what ``fit`` calls after the last step) with ``evaluation.tasks:
[hatecheck]`` on a LoRA-wrapped student, for each student kind and mitigation given, and prints the
task's wall time, rows and cases per second. The weights are untrained: the cost of a forward pass
does not depend on them. Example:

    PYTHONPATH=. python bench/hatecheck_task.py --model models/tiny --threads 1
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="student folder; default: build the tiny model in a temp dir")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a trial uses cpus_per_trial)")
    ap.add_argument("--kinds", nargs="+", default=["seq_cls", "causal_lm"])
    ap.add_argument("--mitigations", nargs="+", default=["none", "token"])
    ap.add_argument("--max-length", type=int, default=64, help="training.max_length")
    args = ap.parse_args()

    import torch

    from bias_ray.models import build_tiny_model
    from bias_ray.runtime import quiet_libraries
    from bias_ray.spec import default_data_root, parse_spec
    from bias_ray.train.trainable import build_mitigation, build_student, downstream_metrics

    quiet_libraries()
    torch.set_num_threads(args.threads)
    root = default_data_root()
    model_dir = Path(args.model) if args.model else build_tiny_model(Path(tempfile.mkdtemp()) / "tiny", root)
    print(f"model {model_dir}; torch threads {args.threads}; load average {os.getloadavg()[0]:.2f}")
    for kind in args.kinds:
        for name in args.mitigations:
            spec = parse_spec({
                "name": "bench", "output_dir": tempfile.mkdtemp(),
                "models": {"generator": str(model_dir), "student": str(model_dir)}, "data": {"root": str(root)},
                "bias_types": ["gender"], "bias_ratios": [0.0], "mitigations": [name], "seeds": [0],
                "training": {"student_kind": kind, "max_length": args.max_length},
                "evaluation": {"tasks": ["hatecheck"]},
            }, check_files=False)
            config = {"bias_type": "gender", "bias_ratio": 0.0, "mitigation": name, "seed": 0}
            mitigation = build_mitigation(spec, config)
            student, model = build_student(spec, mitigation)
            started = time.time()
            out = downstream_metrics(spec, model, student, mitigation, spec.bias_type("gender"), 0)
            total = time.time() - started
            wall, n = out["task/hatecheck/wall_s"], out["task/hatecheck/n"]
            print(f"{kind:9s} {name:6s} rows {n:5.0f}  hatecheck task {wall:6.2f} s ({n / wall:6.0f} cases/s)  "
                  f"downstream_metrics incl. LM copy {total:6.2f} s  target_fpr {out['task/hatecheck/target_fpr']:.3f}")


if __name__ == "__main__":
    main()
