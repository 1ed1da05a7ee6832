"""Group data from neutral prompts: which groups the generator writes about when the prompt names none.

The paper measures group-data misalignment as the group shares that *neutral* prompts produce, e.g. the share
of biographies of women per occupation. For each social dimension of the grid that the framings template
defines (``gender_occupations``, ``culture``: their ``slot`` occupations and ``groups``), the generator answers
``analysis.group_probes`` times per occupation the prompt ``analysis.probe_prompt`` ("Write a short biography
... of a person who works as {slot}."), with the spec's engine and sampling. A text's group is the one whose
lexicon terms (``resources/lexicons/<dimension>.yaml``: identity words, pronouns, names) it uses most; a tie or
no term leaves it unassigned. Per dimension d, occupation s and group g, over the texts assigned a group:

    share(d, s, g) = #{texts of s assigned g} / #{texts of s assigned a group}
    tv(d, s) = 1/2 * sum_g |share(d, s, g) - 1/G|   (total variation from parity over the G groups; 0 = parity)
    probe_tv(d) = the mean of tv(d, s) over the occupations with an assigned text

``probe_tv`` joins the analysis summary for every bias type of that dimension (each framing of it), and the
shares per occupation are written to ``group_probes.csv`` and shown in the report. Parity is the reference,
not the real data's shares: the real data of these dimensions (ToxiGen, a task's rows) has no per-occupation
shares to compare with.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bias_ray.files import write_frame, write_json
from bias_ray.lexicons import load_lexicon, term_pattern
from bias_ray.spec import FRAMINGS_TEMPLATE, SweepSpec

log = logging.getLogger(__name__)
TEXTS_FILE, SHARES_FILE, INFO_FILE = "group_probes_texts.parquet", "group_probes.csv", "group_probes.json"


def probe_dimensions(spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """The template's dimensions (slots and groups) that the spec's bias types belong to."""
    from bias_ray.framings import is_framed, read_template

    template = read_template(spec.generation.template) if spec.generation.template else None
    if template is None or not is_framed(template):
        template = read_template(FRAMINGS_TEMPLATE)
    wanted = {b.dimension_name for b in spec.bias_type_specs}
    return {d: cfg for d, cfg in template["dimensions"].items() if d in wanted}


def _hex_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]  # hex, as the job's ids: an engine seeds a batch by it


def probe_prompts(spec: SweepSpec) -> pd.DataFrame:
    """One row per probe: ``sample_id`` (a hash of what made it), ``prompt, dimension, slot``."""
    n, prompt = spec.analysis.group_probes, spec.analysis.probe_prompt
    rows = [{"sample_id": _hex_id(f"probe\x1f{prompt}\x1f{dim}\x1f{slot}\x1f{i}"), "prompt": prompt.format(slot=slot),
             "dimension": dim, "slot": slot}
            for dim, cfg in probe_dimensions(spec).items() for slot in cfg["slot"] for i in range(n)]
    return pd.DataFrame(rows, columns=["sample_id", "prompt", "dimension", "slot"])


def assign_groups(texts: list[str], dimension: str, groups: list[str]) -> list[str | None]:
    """Each text's group: the one whose lexicon terms it uses most (None on a tie or with no term)."""
    lexicon = load_lexicon(dimension)
    patterns = {g: term_pattern(list(lexicon.groups.get(g, ()))) for g in groups if lexicon.groups.get(g)}
    out: list[str | None] = []
    for text in texts:
        counts = {g: len(p.findall(str(text))) for g, p in patterns.items()}
        best = max(counts.values(), default=0)
        winners = [g for g, c in counts.items() if c == best]
        out.append(winners[0] if best > 0 and len(winners) == 1 else None)
    return out


def group_shares(texts: pd.DataFrame, dimensions: dict[str, dict[str, Any]]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per (dimension, slot, group): texts, assigned, count, share; and ``probe_tv`` per dimension (module doc)."""
    rows, tv = [], {}
    for dim, cfg in dimensions.items():
        groups = list(cfg["groups"])
        per_slot = []
        for slot in cfg["slot"]:
            part = texts[(texts["dimension"] == dim) & (texts["slot"] == slot)]
            assigned = part["group"].dropna()
            for g in groups:
                count = int((assigned == g).sum())
                rows.append({"dimension": dim, "slot": slot, "group": g, "texts": len(part),
                             "assigned": len(assigned), "count": count,
                             "share": count / len(assigned) if len(assigned) else np.nan})
            if len(assigned):
                shares = np.array([(assigned == g).mean() for g in groups])
                per_slot.append(0.5 * float(np.abs(shares - 1 / len(groups)).sum()))
        tv[dim] = float(np.mean(per_slot)) if per_slot else float("nan")
    return pd.DataFrame(rows), tv


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent or torn: the probes run again
        return None


def run_group_probes(spec: SweepSpec, out: Path) -> dict[str, float]:
    """Generate (or reuse) the probes' texts, write their shares under ``out``; ``probe_tv`` per dimension."""
    from bias_ray.generate import generate_texts

    dimensions = probe_dimensions(spec)
    if not dimensions:
        log.warning("analysis.group_probes: no bias type of %s is a dimension of the framings template "
                    "(gender_occupations, culture); no probes", spec.name)
        return {}
    settings = {"group_probes": spec.analysis.group_probes, "probe_prompt": spec.analysis.probe_prompt,
                "generator": str(spec.models.generator), "engine": spec.generation.engine,
                "dimensions": {d: list(cfg["slot"]) for d, cfg in dimensions.items()}}
    info = _read_json(out / INFO_FILE)
    if (out / TEXTS_FILE).is_file() and info and info.get("settings") == settings:
        texts = pd.read_parquet(out / TEXTS_FILE)  # this very probe ran before: its texts stand
    else:
        texts = generate_texts(spec, probe_prompts(spec))
        texts["group"] = None
        for dim, cfg in dimensions.items():
            mask = texts["dimension"] == dim
            texts.loc[mask, "group"] = pd.Series(assign_groups(texts.loc[mask, "text"].tolist(), dim,
                                                               list(cfg["groups"])), index=texts.index[mask],
                                                 dtype=object)
        write_frame(texts, out / TEXTS_FILE)
    shares, tv = group_shares(texts, dimensions)
    write_frame(shares, out / SHARES_FILE)
    write_json(out / INFO_FILE, {"settings": settings, "probe_tv": tv, "texts": len(texts),
                                 "assigned": int(texts["group"].notna().sum())})
    return tv
