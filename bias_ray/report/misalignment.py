"""Misalignment next to harm: each bias type's three misalignment measures beside the bias it inherited.

The paper's claim is that misalignment of augmented with real data (values, group data, data
distribution) drives bias inheritance. Here every bias type contributes one point: its
misalignment measures (from ``bias-ray analyze``) and its harm (the headline metric's change
from ratio 0 to the highest ratio under ``none``, positive = worse). With 3 or more bias types,
Spearman's rank correlation of each measure with the harm tests the claim on this sweep.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bias_ray.report.headline import Inheritance
from bias_ray.report.stats import spearman

# One measure per misalignment factor (bias_ray/analysis): values, group data, data distribution.
MEASURES = {
    "value_gap": "values: stance gap to real data",
    "group_js": "group data: representation JS (bits)",
    "mmd": "distribution: MMD^2 of embeddings",
}
MIN_BIAS_TYPES_FOR_CORRELATION = 3


def misalignment_vs_harm(analysis: pd.DataFrame, inherited: list[Inheritance]) -> pd.DataFrame:
    """One row per bias type with both: the three measures, the metric's change under ``none`` and its harm."""
    harm = pd.DataFrame([{
        "bias_type": i.bias_type, "change": i.change.mean, "change_low": i.change.low, "change_high": i.change.high,
        "harm": i.harm.mean, "harm_low": i.harm.low, "harm_high": i.harm.high, "seeds": i.change.n,
        "verdict": i.verdict,
    } for i in inherited])
    if harm.empty or analysis is None or analysis.empty:
        return pd.DataFrame()
    cols = ["bias_type"] + [m for m in MEASURES if m in analysis] + [c for c in ("mmd_p",) if c in analysis]
    return analysis[cols].merge(harm, on="bias_type", how="inner").sort_values("bias_type").reset_index(drop=True)


def rank_correlations(frame: pd.DataFrame) -> dict[str, tuple[float, int]]:
    """Spearman's rho of each measure with the harm, and the number of bias types it rests on."""
    return {m: spearman(frame[m], frame["harm"]) for m in MEASURES if m in frame}


def correlation_sentences(correlations: dict[str, tuple[float, int]]) -> list[str]:
    """What the rank correlations say, in words; none from fewer than 3 bias types or constant values."""
    out = []
    for m, (rho, n) in correlations.items():
        if not np.isfinite(rho):
            out.append(f"{m}: no rank correlation (n={n} bias types; it needs {MIN_BIAS_TYPES_FOR_CORRELATION} "
                       "or more, with values that differ).")
        else:
            trend = "more" if rho > 0 else "less"
            out.append(f"{m}: Spearman rho = {rho:+.2f} over n={n} bias types (bias types with more {m} "
                       f"inherited {trend} harm).")
    if any(np.isfinite(rho) and n < 10 for rho, n in correlations.values()):
        out.append("With fewer than 10 bias types a rank correlation is a hint, not a test: at n=3 even "
                   "rho = 1 has a two-sided exact p of 1/3.")
    return out


def finding(frame: pd.DataFrame, correlations: dict[str, tuple[float, int]], analysed: bool, enabled: bool) -> str:
    """The summary's one sentence on misalignment and harm."""
    if not analysed:
        return ("Misalignment: not analysed (the spec sets `analysis.enabled: false`)." if not enabled else
                "Misalignment: not analysed yet; run `bias-ray analyze SPEC`.")
    if frame.empty:
        return "Misalignment: analysed, but there is no harm to set beside it (no `none` trials at two ratios)."
    worse = frame.loc[frame["verdict"] == "worse", "bias_type"].tolist()
    if (frame["verdict"] == "no interval").all():
        head = (f"Misalignment next to harm: {len(frame)} bias type(s); one seed gives the harm no interval, so "
                "none is called inherited")
    else:
        head = (f"Misalignment next to harm: {len(frame)} bias type(s); inherited harm (worse at the highest ratio, "
                f"95% CI excluding 0) for {', '.join(f'`{b}`' for b in worse) if worse else 'none of them'}")
    finite = {m: rc for m, rc in correlations.items() if np.isfinite(rc[0])}
    if len(frame) < MIN_BIAS_TYPES_FOR_CORRELATION or not finite:
        return head + (f"; too few bias types for a rank correlation (it needs {MIN_BIAS_TYPES_FOR_CORRELATION})."
                       if len(frame) < MIN_BIAS_TYPES_FOR_CORRELATION else "; no measure varies enough to rank.")
    rhos = ", ".join(f"`{m}` {rho:+.2f}" for m, (rho, _) in finite.items())
    caveat = "; a hint, not a test, at this n" if len(frame) < 10 else ""
    return f"{head}; Spearman rho with harm: {rhos} (n={len(frame)} bias types{caveat})."
