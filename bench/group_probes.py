"""Group data from neutral prompts with a real generator (issue 24): SmolLM2-135M-Instruct writes N biographies per
occupation of the paper's two dimensions from a prompt that names no group; prints the wall time, the group shares
per occupation and ``probe_tv`` (bias_ray/analysis/probes.py).

    python bench/group_probes.py [N] [--out DIR]
"""

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bias_ray.analysis.probes import run_group_probes
from bias_ray.models.gguf import ensure_converted
from bias_ray.models.packaged import packaged_path
from bias_ray.spec import default_data_root, parse_spec

gen = ensure_converted(str(packaged_path("packaged:smollm2-135m-instruct")))
n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
work = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else Path(tempfile.mkdtemp())
spec = parse_spec({"name": "probes", "output_dir": str(work / "run"),
                   "models": {"generator": str(gen), "student": str(gen)},
                   "data": {"root": str(default_data_root())}, "bias_types": ["gender_occupations", "culture"],
                   "framings": ["contextual-single-explicit"], "bias_ratios": [0.0], "mitigations": ["none"],
                   "seeds": [0],
                   "generation": {"engine": "transformers", "chat": True, "max_new_tokens": 80, "temperature": 1.0,
                                  "top_p": 0.95, "batch_size": 20},
                   "analysis": {"group_probes": n}}, check_files=False)
out = work / "analysis"
out.mkdir(parents=True, exist_ok=True)
t = time.time()
tv = run_group_probes(spec, out)
print("wall_s", round(time.time() - t, 1), "probe_tv", tv)
s = pd.read_csv(out / "group_probes.csv")
print(s.pivot(index=["dimension", "slot", "texts", "assigned"], columns="group", values="share").round(2).to_string())
texts = pd.read_parquet(out / "group_probes_texts.parquet")
print(texts[["slot", "group", "text"]].head(6).to_string(max_colwidth=100))
