"""Prompt construction: one prompt row per augmented sample to generate.

Each row carries its provenance (template id and version, bias type, group, stance, seed row
ids) and a deterministic ``sample_id`` so a rerun produces the same prompts in the same order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bias_ray.data.loaders import stable_id
from bias_ray.spec import RESOURCES, SweepSpec

DEFAULT_TEMPLATE = RESOURCES / "prompts" / "toxigen_statements.yaml"


def load_template(path: str | Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {path} does not exist")
    template = yaml.safe_load(path.read_text())
    for key in ("id", "version", "stances"):
        if key not in template:
            raise ValueError(f"prompt template {path}: key {key!r} is missing")
    return template


def _stance_counts(stances: dict[str, float], n: int) -> dict[str, int]:
    """Split ``n`` samples over stances by their shares, exactly (largest remainder)."""
    total = sum(stances.values())
    raw = {s: n * w / total for s, w in stances.items()}
    counts = {s: int(v) for s, v in raw.items()}
    for s in sorted(raw, key=lambda s: raw[s] - counts[s], reverse=True)[: n - sum(counts.values())]:
        counts[s] += 1
    return counts


def build_prompts(spec: SweepSpec, seed_rows: pd.DataFrame, template: dict[str, Any] | None = None) -> pd.DataFrame:
    """Prompts for every bias type in the spec, spread evenly over its groups and the stances."""
    template = template or load_template()
    gen = spec.generation
    rng = np.random.default_rng(gen.seed)
    rows = []
    for bias in spec.bias_type_specs:
        for stance, count in _stance_counts(gen.stances, gen.samples_per_bias_type).items():
            cfg = template["stances"][stance]
            for i in range(count):
                group = bias.groups[i % len(bias.groups)]
                pool = seed_rows[(seed_rows["group"] == group) & (seed_rows["label"] == cfg["seed_label"])]
                if pool.empty:  # a group without seed statements of this stance: use any of the group
                    pool = seed_rows[seed_rows["group"] == group]
                if pool.empty:
                    raise ValueError(
                        f"bias type {bias.name!r}: group {group!r} has no seed statements in the real data; "
                        "use ToxiGen group names (see bias_ray/resources/bias_types.yaml)"
                    )
                k = min(gen.few_shot, len(pool))
                shots = pool.iloc[rng.choice(len(pool), size=k, replace=False)] if k else pool.iloc[:0]
                prefix = template.get("line_prefix", "- ")
                lines = [cfg["header"].format(group=group.replace("_", " "))]
                lines += [f"{prefix}{t}" for t in shots["text"]]
                prompt = "\n".join(lines) + "\n" + prefix.rstrip()
                rows.append(
                    {
                        "sample_id": stable_id(template["id"], template["version"], bias.name, group, stance, i,
                                               gen.seed),
                        "prompt": prompt,
                        "bias_type": bias.name,
                        "group": group,
                        "stance": stance,
                        "label": int(cfg["label"]),
                        "seed_ids": ",".join(shots["id"]),
                        "template_id": template["id"],
                        "template_version": int(template["version"]),
                    }
                )
    return pd.DataFrame(rows)


def clean_generation(text: str) -> str:
    """Keep the first generated statement: up to the first newline, stripped of list markers."""
    first = text.strip().split("\n", 1)[0]
    return first.strip().lstrip("-").strip()
