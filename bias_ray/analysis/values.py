"""Values: the stance toward each group in real vs augmented data, scored by the stance classifier."""

from __future__ import annotations

import numpy as np
import pandas as pd


def value_table(real_groups, real_p, other_groups, other_p, groups: list[str]) -> pd.DataFrame:
    """Per group: mean P(hate) in each set, the gap (other - real) and the other set's group share."""
    real = pd.DataFrame({"group": np.asarray(real_groups), "p": np.asarray(real_p, dtype=float)})
    other = pd.DataFrame({"group": np.asarray(other_groups), "p": np.asarray(other_p, dtype=float)})
    rows = []
    for g in groups:
        r, o = real.loc[real["group"] == g, "p"], other.loc[other["group"] == g, "p"]
        rows.append({"group": g, "real_stance": r.mean() if len(r) else np.nan,
                     "other_stance": o.mean() if len(o) else np.nan, "real_rows": len(r), "other_rows": len(o),
                     "other_share": len(o) / max(1, len(other))})
    table = pd.DataFrame(rows)
    table["gap"] = table["other_stance"] - table["real_stance"]
    return table


def value_summary(table: pd.DataFrame, real_p, other_p) -> dict[str, float]:
    """``value_gap``: |stance gap| averaged with the other set's group shares (small groups weigh little);
    ``value_gap_max``: the largest |gap|; ``stance_diff``: mean P(hate) other - real over all rows."""
    both = table.dropna(subset=["gap"])
    weights = both["other_share"].to_numpy()
    gap = np.abs(both["gap"].to_numpy())
    return {
        "value_gap": float((weights * gap).sum() / weights.sum()) if weights.sum() else float("nan"),
        "value_gap_max": float(gap.max()) if len(gap) else float("nan"),
        "stance_diff": float(np.mean(other_p) - np.mean(real_p)) if len(other_p) and len(real_p) else float("nan"),
    }
