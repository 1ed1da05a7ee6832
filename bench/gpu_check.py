"""GPU check (not a test): the transformers engine and a LoRA trial on one CUDA device, without Ray.

``--dtype`` (default bfloat16) loads the engine's and the trial's weights in that precision;
``--chat`` gives the model a chat template and sends the engine's prompts as chats. The trial
line says where its trained weights live and in which dtype (they must be on the GPU, float32).

Ray is too large to carry to the lent GPU machine, so this drives the same classes the Ray jobs
use: the engine's callable class (what each Ray Data actor runs) and the trial loop ``fit`` (what
each Tune trial runs), and prints their throughput on the GPU beside the same work on the CPU.

    python bench/gpu_check.py --data-root ../shared/data --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def engine_throughput(model_dir: Path, prompts: list[str], batch_size: int, max_new_tokens: int, device: str,
                      batches: int, dtype: str = "auto", chat: bool = False) -> dict:
    from bias_ray.generate.engines.transformers_engine import TransformersGenerator

    gen = TransformersGenerator(str(model_dir), {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": max_new_tokens,
                                                 "max_prompt_tokens": 256}, device=device, dtype=dtype, chat=chat)
    gen.generate(prompts[:batch_size], seed=0)  # warm-up (CUDA kernels, allocator)
    if device == "cuda":
        gen.torch.cuda.synchronize()
    tokens, started = 0, time.perf_counter()
    for b in range(batches):
        chunk = prompts[b * batch_size:(b + 1) * batch_size]
        _, counts = gen.generate(chunk, seed=b)
        tokens += int(np.sum(counts))
    if device == "cuda":
        gen.torch.cuda.synchronize()
    wall = time.perf_counter() - started
    return {"device": device, "dtype": str(gen.model.dtype), "chat": chat, "batch_size": batch_size,
            "prompts": batches * batch_size, "tokens": tokens,
            "wall_s": round(wall, 3), "tokens_per_s": round(tokens / wall, 1),
            "prompts_per_s": round(batches * batch_size / wall, 1)}


def trial_throughput(model_dir: Path, data_root: Path, out: Path, gpus: float, tasks: list[str],
                     dtype: str = "auto") -> dict:
    from bias_ray.data.loaders import load_toxigen
    from bias_ray.generate.imported import import_augmented
    from bias_ray.spec import parse_spec
    from bias_ray.train.trainable import fit

    run = out / f"trial_gpu{gpus}"
    spec = parse_spec({
        "name": "gpu_check", "output_dir": str(run),
        "models": {"generator": str(model_dir), "student": str(model_dir), "dtype": dtype},
        "data": {"root": str(data_root)},
        "bias_types": ["religion"], "bias_ratios": [0.5], "mitigations": ["none"], "seeds": [0],
        "training": {"train_size": 512, "epochs": 2, "batch_size": 32, "eval_every": 8, "max_length": 96,
                     "learning_rate": 0.001},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": gpus},
        "evaluation": {"tasks": tasks, "max_rows_per_task": 200},
    })
    if not spec.augmented_dir.exists():  # real statements stand in for augmented ones: this measures speed
        real = load_toxigen(data_root)
        rows = real[(real["bias_type"] == "religion") & (real["split"] == "train")]
        import_augmented(spec, rows.assign(id=rows["id"] + "-aug"), source="gpu_check")
    reports: list[dict] = []
    placement: dict[str, list[str]] = {}

    def report(m: dict, state: dict) -> None:
        reports.append(dict(m))
        placement["devices"] = sorted({str(v.device) for v in state["model"].values()})
        placement["dtypes"] = sorted({str(v.dtype) for v in state["model"].values()})

    started = time.perf_counter()
    metrics = fit(spec, {"bias_type": "religion", "bias_ratio": 0.5, "mitigation": "none", "seed": 0, "cpus": 1},
                  report)
    wall = time.perf_counter() - started
    task_s = sum(v for k, v in metrics.items() if k.startswith("task/") and k.endswith("/wall_s"))
    return {"gpus_per_trial": gpus, "dtype": dtype, "trained_weights_on": placement["devices"],
            "trained_weights_dtype": placement["dtypes"], "steps": metrics["step"], "reports": len(reports),
            "wall_s": round(wall, 2),
            "train_and_eval_s": round(wall - task_s, 2), "downstream_task_s": round(task_s, 2),
            "steps_per_s": round(metrics["step"] / max(wall - task_s, 1e-9), 2),
            "macro_f1": round(metrics["macro_f1"], 4),
            "task_metrics": {k: round(v, 4) for k, v in metrics.items()
                             if k.startswith("task/") and "/wall_s" not in k}}


def main() -> None:
    import torch

    from bias_ray.models import build_tiny_model
    from bias_ray.runtime import quiet_libraries

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("/tmp/gpu_check"))
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--cpu-baseline", action="store_true", help="also time the CPU (slow for big batches)")
    ap.add_argument("--dtype", default="bfloat16", choices=["auto", "bfloat16", "float16", "float32"])
    ap.add_argument("--chat", action="store_true", help="engine prompts as chats through a chat template")
    args = ap.parse_args()
    quiet_libraries()
    torch.manual_seed(0)
    model_dir = args.out / f"llama_h{args.hidden}_l{args.layers}"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, args.data_root, vocab_size=8000, hidden_size=args.hidden, num_layers=args.layers,
                         num_heads=8)
    if args.chat:
        from bias_ray.models.tiny import add_chat_template

        add_chat_template(model_dir)
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    n_params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_config(cfg).parameters())
    print(json.dumps({"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                      "torch": torch.__version__, "model_params_M": round(n_params / 1e6, 1)}))

    from bias_ray.data.loaders import load_toxigen

    texts = load_toxigen(args.data_root)["text"].tolist()
    rng = np.random.default_rng(0)
    ending = "\n\nWrite one more statement like these." if args.chat else "\n-"
    prompts = ["The following are statements:\n" + "\n".join(f"- {texts[j]}" for j in rng.choice(len(texts), 3))
               + ending for _ in range(256 * (args.batches + 1))]
    devices = (["cuda"] if torch.cuda.is_available() else []) + (["cpu"] if args.cpu_baseline else [])
    for device in devices:
        sizes = (64, 256) if device == "cuda" else (64,)
        for bs in sizes:
            batches = args.batches if device == "cuda" else 2
            print("engine", json.dumps(engine_throughput(model_dir, prompts, bs, args.max_new_tokens, device,
                                                         batches, args.dtype, args.chat)), flush=True)
    gpus = [1.0] if torch.cuda.is_available() else []
    for g in gpus + ([0.0] if args.cpu_baseline else []):
        print("trial", json.dumps(trial_throughput(model_dir, args.data_root, args.out, g,
                                                   ["crows_pairs", "bbq", "toxigen"], args.dtype)), flush=True)


if __name__ == "__main__":
    main()
