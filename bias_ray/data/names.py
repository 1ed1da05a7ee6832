"""First and last names by gender and ethnicity: BBQ's ``vocabulary_proper_names.csv``, or the paper's cells.

BBQ lists 10 first names for each gender (F, M) x ethnicity (Arab, Asian, Black, Latino, White)
cell (Tzioumis 2018 and other name-frequency sources) and 20 last names per ethnicity. The name
tasks (recruitment, salary, story) build a full name as a first name of the cell plus a last name of
the same ethnicity, so the only cue that changes between a profile's counterfactual copies is the name.
With the task option ``names: paper`` the cells are the paper's instead: its four cultures (arabic,
chinese, portuguese, spanish, the ``culture`` bias type's groups) x F, M, from
``resources/names/paper_cultures.yaml`` (bias-ray's lists; docs/paper.md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd

GENDER_WORDS = {"F": "woman", "M": "man"}


@dataclass(frozen=True)
class NameBook:
    """First names per (gender, ethnicity) cell and last names per ethnicity."""

    first: dict[tuple[str, str], tuple[str, ...]]
    last: dict[str, tuple[str, ...]]

    @property
    def genders(self) -> list[str]:
        return sorted({g for g, _ in self.first})

    @property
    def ethnicities(self) -> list[str]:
        return sorted({e for _, e in self.first})

    @property
    def cells(self) -> list[tuple[str, str]]:
        """Every (gender, ethnicity) cell, genders outer."""
        return [(g, e) for g in self.genders for e in self.ethnicities]

    def full_name(self, gender: str, ethnicity: str, rng: random.Random) -> str:
        return f"{rng.choice(self.first[(gender, ethnicity)])} {rng.choice(self.last[ethnicity])}"


@cache
def _load(path: str) -> NameBook:
    table = pd.read_csv(path, dtype=str).fillna("")
    missing = {"Name", "First_last", "gender", "ethnicity"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: columns {sorted(missing)} are missing; is this BBQ's vocabulary_proper_names.csv?")
    first: dict[tuple[str, str], list[str]] = {}
    for row in table[table["First_last"] == "first"].itertuples(index=False):
        first.setdefault((row.gender, row.ethnicity), []).append(row.Name)
    last: dict[str, list[str]] = {}
    for row in table[table["First_last"] == "last"].itertuples(index=False):
        last.setdefault(row.ethnicity, []).append(row.Name)
    lacking = sorted({e for _, e in first} - set(last))
    if not first or lacking:
        raise ValueError(f"{path}: need first names per gender x ethnicity and last names for every ethnicity "
                         f"(none for {lacking})")
    return NameBook({k: tuple(v) for k, v in first.items()}, {k: tuple(v) for k, v in last.items()})


NAME_SOURCES = ("bbq", "paper")
PAPER_NAMES = Path(__file__).resolve().parent.parent / "resources" / "names" / "paper_cultures.yaml"


@cache
def _paper_book(path: str) -> NameBook:
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    first = {(gender, culture): tuple(names) for gender, cultures in data["first"].items()
             for culture, names in cultures.items()}
    return NameBook(first, {culture: tuple(names) for culture, names in data["last"].items()})


def load_name_book(root: str | Path, source: str = "bbq") -> NameBook:
    """The names of ``source``: ``bbq``, those under ``<root>/bbq/templates/vocabulary_proper_names.csv``;
    ``paper``, the paper's four cultures x two genders (cached)."""
    if source not in NAME_SOURCES:
        raise ValueError(f"names: {source!r} is not a name source; use one of {', '.join(NAME_SOURCES)}")
    if source == "paper":
        return _paper_book(str(PAPER_NAMES))
    path = Path(root) / "bbq" / "templates" / "vocabulary_proper_names.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (BBQ proper-name vocabulary); point data.root at the folder "
                                "described in ../shared/data/README.md")
    return _load(str(path))


__all__ = ["GENDER_WORDS", "NAME_SOURCES", "NameBook", "load_name_book"]
