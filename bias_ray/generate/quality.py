"""Quality filters on generated rows: cleaning, length and refusal checks, exact duplicates.

Row filters give each row a ``drop_reason`` ("" = kept) so the manifest can count what was
dropped and why; duplicates are found over the whole job once it is complete, keeping the
smallest sample id of each text so the result does not depend on the order shards finished.
"""

from __future__ import annotations

import pandas as pd

from bias_ray.spec import QualitySpec


def clean_generation(text: str) -> str:
    """Keep the first generated statement: up to the first newline, stripped of list markers."""
    first = str(text).strip().split("\n", 1)[0]
    return first.strip().lstrip("-").strip()


def drop_reason(text: str, quality: QualitySpec) -> str:
    """Why a cleaned text fails the row filters, or "" when it passes."""
    if not text.strip():
        return "empty"
    if len(text) < quality.min_chars:
        return "too_short"
    if len(text) > quality.max_chars:
        return "too_long"
    lowered = text.lower()
    if any(p.lower() in lowered for p in quality.refusal_patterns):
        return "refusal"
    return ""


def find_duplicates(rows: pd.DataFrame) -> pd.DataFrame:
    """``sample_id, duplicate_of`` for kept rows whose text repeats an earlier (smaller id) kept row."""
    kept = rows.loc[rows["drop_reason"] == "", ["sample_id", "text"]].sort_values(["text", "sample_id"])
    first = kept.groupby("text", sort=False)["sample_id"].transform("first")
    dup = kept[kept["sample_id"] != first]
    return pd.DataFrame({"sample_id": dup["sample_id"].to_numpy(), "duplicate_of": first[dup.index].to_numpy()})
