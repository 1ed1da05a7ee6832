"""Per-bias-type lexicons (group identity terms, stereotype attributes) and matching on word boundaries.

The data lives in ``bias_ray/resources/lexicons/<bias_type>.yaml``; a study may point the
``lexicon`` parameter of a mitigation at its own file or folder of the same layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, Field

from bias_ray.spec import RESOURCES

LEXICON_DIR = RESOURCES / "lexicons"


def resolve_lexicon(v: str | None) -> str | None:
    """An absolute path, so Ray workers (with another working directory) find the same file."""
    if v is None:
        return None
    path = Path(v).expanduser().resolve()
    if not path.exists():
        raise ValueError(f"lexicon {v!r}: no such file or folder; give a <bias_type>.yaml file or a folder of them")
    return str(path)


# the `lexicon` parameter of every mitigation that reads one
LexiconSource = Annotated[
    str | None,
    AfterValidator(resolve_lexicon),
    Field(description="lexicon file or folder; default: built-in lexicons"),
]


@dataclass(frozen=True)
class Lexicon:
    bias_type: str
    groups: dict[str, tuple[str, ...]]
    attributes: tuple[str, ...]
    neutral: dict[str, str] = field(default_factory=dict)  # lower-cased term -> a neutral word (mask replace)

    def terms(self, kinds: tuple[str, ...] = ("groups", "attributes"), groups: list[str] | None = None) -> list[str]:
        out: list[str] = []
        if "groups" in kinds:
            for g, terms in self.groups.items():
                if groups is None or g in groups:
                    out += terms
        if "attributes" in kinds:
            out += self.attributes
        return list(dict.fromkeys(t.lower() for t in out))

    @cached_property
    def _group_of(self) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        for g, terms in self.groups.items():
            for i, t in enumerate(terms):
                out.setdefault(t.lower(), (g, i))
        return out

    def group_of(self, term: str) -> tuple[str, int] | None:
        return self._group_of.get(term.lower())


def lexicon_path(bias_type: str, source: str | Path | None = None) -> Path:
    base = Path(source) if source else LEXICON_DIR
    path = base / f"{bias_type}.yaml" if base.is_dir() else base
    if not path.is_file():
        raise FileNotFoundError(
            f"no lexicon for bias type {bias_type!r} at {path}; write one (groups: {{group: [terms]}}, "
            f"attributes: [terms]) or set the mitigation parameter `lexicon` to a file or folder holding "
            f"<bias_type>.yaml (built-in: {', '.join(sorted(p.stem for p in LEXICON_DIR.glob('*.yaml')))})"
        )
    return path


def load_lexicon(bias_type: str, source: str | Path | None = None) -> Lexicon:
    """The lexicon of ``bias_type`` from ``source`` (a YAML file, a folder of them, or the built-in folder)."""
    path = lexicon_path(bias_type, source)
    data = yaml.safe_load(path.read_text()) or {}
    groups = data.get("groups")
    if not isinstance(groups, dict) or not groups or not all(isinstance(v, list) for v in groups.values()):
        raise ValueError(f"{path}: `groups` must map each group name to a list of identity terms")
    attributes = data.get("attributes", []) or []
    if not isinstance(attributes, list):
        raise ValueError(f"{path}: `attributes` must be a list of terms")
    neutral = data.get("neutral", {}) or {}
    if not isinstance(neutral, dict):
        raise ValueError(f"{path}: `neutral` must map terms to neutral words")
    return Lexicon(
        bias_type=str(data.get("bias_type", bias_type)),
        groups={str(g): tuple(str(t) for t in ts) for g, ts in groups.items()},
        attributes=tuple(str(t) for t in attributes),
        neutral={str(k).lower(): str(v) for k, v in neutral.items()},
    )


def term_pattern(terms: list[str]) -> re.Pattern[str]:
    """Case-insensitive match of any term on word boundaries, longest term first ("trans women" before "trans")."""
    if not terms:
        return re.compile(r"(?!x)x")
    alts = "|".join(re.escape(t) for t in sorted(set(terms), key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alts})(?!\w)", re.IGNORECASE)


def find_spans(text: str, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    return [m.span() for m in pattern.finditer(text)]


def _match_case(source: str, replacement: str) -> str:
    if source.isupper() and len(source) > 1:
        return replacement.upper()
    if source[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def swap_groups(text: str, lexicon: Lexicon, groups: list[str], pattern: re.Pattern[str]) -> tuple[str, int]:
    """Counterfactual text: each term of group ``groups[k]`` becomes the same-index term of ``groups[k+1]``.

    Term ``i`` of the source group maps to term ``i mod n`` of the target group (lexicon lists are
    parallel), case follows the source. Returns the new text and the number of swaps.
    """
    order = [g for g in groups if g in lexicon.groups]
    if len(order) < 2:
        return text, 0
    nxt = {g: order[(k + 1) % len(order)] for k, g in enumerate(order)}
    swaps = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal swaps
        hit = lexicon.group_of(m.group(0))
        if hit is None or hit[0] not in nxt:
            return m.group(0)
        target = lexicon.groups[nxt[hit[0]]]
        swaps += 1
        return _match_case(m.group(0), target[hit[1] % len(target)])

    return pattern.sub(repl, text), swaps
