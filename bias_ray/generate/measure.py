"""What the generator wrote, measured per (bias type, group, stance): does it name the group, is it hateful?

For the kept rows ``K`` of a cell (row filters passed, exact duplicates removed)::

    names_group_share = |{r in K : r.text matches a lexicon identity term of r.group}| / |K|
    hate_share        = |{r in K : P_clf(hate | r.text) > 0.5}| / |K|

The identity terms are the bias type's lexicon (``bias_ray/resources/lexicons``, matched on word
boundaries, case-insensitively, by the same matcher the mask and loss mitigations use); ``P_clf``
is the stance classifier (:func:`bias_ray.measures.classifier.toxigen_classifier`, logistic
regression on MiniLM embeddings of the ToxiGen train split). A group without lexicon terms has
``names_group_share`` None. The kept rows stream through the store's reader
(:func:`bias_ray.augmented.iter_kept_batches`), shard after shard, only the columns needed.

``names_group_share`` counts every kept row (a regex). ``hate_share`` is over the first ``max_scored``
kept rows of each cell in shard order (``generation.measure_rows``, default 200; ``hate_scored`` says
how many), with its Wilson 95% interval (``hate_share_low``, ``hate_share_high``): embedding every row
of a 10M-row job with MiniLM in the driver would cost hours, and a bounded sample keeps the measures a
small part of any job (``bench/generation.py`` times them). 200 rows give a share to about +-0.07.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bias_ray.augmented import iter_kept_batches
from bias_ray.lexicons import load_lexicon, term_pattern
from bias_ray.spec import SweepSpec

MAX_SCORED_PER_CELL = 200  # generation.measure_rows' default


def _kept_rows(out: Path):
    """Kept rows, shard after shard in the store's order: (bias_type, group, stance, text) frames."""
    yield from iter_kept_batches(out, ["bias_type", "group", "stance", "text"])


def names_group(texts: list[str], bias_type: str, group: str) -> np.ndarray | None:
    """Per text: does it hold an identity term of ``group`` (lexicon of ``bias_type``)? None: no terms."""
    try:
        lexicon = load_lexicon(bias_type)
    except FileNotFoundError:
        return None
    terms = list(lexicon.groups.get(group, ()))
    if not terms:
        return None
    pattern = term_pattern([t.lower() for t in terms])
    return np.array([pattern.search(t) is not None for t in texts], dtype=bool)


def wilson(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share: ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def generator_measures(spec: SweepSpec, out: Path | None = None, classifier: Any = None,
                       max_scored: int | None = None) -> list[dict[str, Any]]:
    """``[{bias_type, group, stance, kept, names_group_share, hate_share, hate_share_low, hate_share_high,
    hate_scored}]``, one per cell (``max_scored``: default ``generation.measure_rows``).

    ``classifier`` (anything with ``proba(texts)``) defaults to the spec's stance classifier.
    """
    out = Path(out or spec.augmented_dir)
    max_scored = spec.generation.measure_rows if max_scored is None else max_scored
    lexicon_names = {b.name: b.base_name for b in spec.bias_type_specs}  # a framed cell reads its bias type's
    counts: dict[tuple[str, str, str], list[float]] = {}  # cell -> [kept, named, hate, scored]
    no_terms: set[tuple[str, str, str]] = set()
    for frame in _kept_rows(out):
        if classifier is None:
            from bias_ray.measures.classifier import toxigen_classifier

            ev = spec.evaluation
            classifier = toxigen_classifier(str(spec.data.resolved_root), ev.encoder, ev.classifier_epochs,
                                            ev.classifier_l2, spec.data.test_fraction)
        for (bias, group, stance), cell in frame.groupby(["bias_type", "group", "stance"], sort=False):
            key = (str(bias), str(group), str(stance))
            named = names_group(cell["text"].astype(str).tolist(), lexicon_names.get(key[0], key[0]), key[1])
            acc = counts.setdefault(key, [0.0, 0.0, 0.0, 0.0])
            acc[0] += len(cell)
            to_score = cell["text"].astype(str).tolist()[: max(0, max_scored - int(acc[3]))]
            if to_score:
                acc[2] += float((np.asarray(classifier.proba(to_score)) > 0.5).sum())
                acc[3] += len(to_score)
            if named is None:
                no_terms.add(key)
            else:
                acc[1] += float(named.sum())
    rows = []
    for key in sorted(counts):
        kept, named, hate, scored = counts[key]
        low, high = wilson(hate, scored)
        rows.append({"bias_type": key[0], "group": key[1], "stance": key[2], "kept": int(kept),
                     "names_group_share": None if key in no_terms else round(named / kept, 4),
                     "hate_share": round(hate / scored, 4), "hate_share_low": round(low, 4),
                     "hate_share_high": round(high, 4), "hate_scored": int(scored)})
    return rows


def measures_frame(measures: list[dict[str, Any]]) -> pd.DataFrame:
    """The manifest's ``generator_measures`` as a table (for reports and prints)."""
    return pd.DataFrame(measures, columns=["bias_type", "group", "stance", "kept", "names_group_share", "hate_share",
                                           "hate_scored"])
