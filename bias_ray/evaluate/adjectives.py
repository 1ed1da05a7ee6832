"""The share of negative adjectives in generated text, over the ABC model's dimensions (the paper's story metric).

The lexicon (``resources/abc_adjectives.yaml``) lists positive and negative trait adjectives for each of
agency, beliefs and communion. Over a group's texts ``T_g``, with ``neg_d(t)`` and ``pos_d(t)`` the number of
negative and positive adjectives of dimension ``d`` in text ``t`` (case-insensitive, on word boundaries):

    negative_share_d(g) = sum_{t in T_g} neg_d(t) / sum_{t in T_g} (neg_d(t) + pos_d(t))

and ``negative_share(g)`` the same over all three dimensions' counts. Counts are pooled over the texts (a
long story weighs more), and a group with no adjective of a dimension gets NaN there, left out of the gap
``max_g - min_g`` (0 is fair). The share is 0.5 when a group's texts use as many negative as positive traits.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from bias_ray.lexicons import term_pattern

LEXICON = Path(__file__).resolve().parent.parent / "resources" / "abc_adjectives.yaml"
DIMENSIONS = ("agency", "beliefs", "communion")


@cache
def _patterns(path: str = str(LEXICON)) -> dict[tuple[str, str], re.Pattern[str]]:
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    missing = [d for d in DIMENSIONS if not {"positive", "negative"} <= set(data.get(d) or {})]
    if missing:
        raise ValueError(f"{path}: dimensions {missing} need a positive and a negative list")
    return {(d, pole): term_pattern(data[d][pole]) for d in DIMENSIONS for pole in ("positive", "negative")}


def adjective_counts(texts: list[str]) -> pd.DataFrame:
    """Columns ``<dimension>/<pole>``: how many adjectives of each dimension and pole each text holds."""
    patterns = _patterns()
    return pd.DataFrame({f"{d}/{pole}": [len(p.findall(str(t))) for t in texts] for (d, pole), p in patterns.items()})


def negative_shares(counts: pd.DataFrame, groups: pd.Series | np.ndarray, prefix: str = "") -> dict[str, float]:
    """``<prefix><group>/negative_share[/<dimension>]`` and ``<prefix>negative_share_gap[/<dimension>]`` (module
    doc) from :func:`adjective_counts` and each text's group."""
    totals = counts.groupby(np.asarray(groups), sort=True).sum()
    out: dict[str, float] = {}
    for suffix, dims in (("", DIMENSIONS), *((f"/{d}", (d,)) for d in DIMENSIONS)):
        neg = sum(totals[f"{d}/negative"] for d in dims)
        found = neg + sum(totals[f"{d}/positive"] for d in dims)
        share = (neg / found.where(found > 0)).astype(float)
        for group, value in share.items():
            out[f"{prefix}{group}/negative_share{suffix}"] = float(value)
        present = share.dropna()
        out[f"{prefix}negative_share_gap{suffix}"] = float(present.max() - present.min()) if len(present) >= 2 else 0.0
    return out
