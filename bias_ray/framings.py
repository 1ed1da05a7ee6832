"""Framed prompt templates: the paper's bias-generation framings as data (``resources/prompts/paper_framings.yaml``).

A framing is a corner of three binary axes: ``context`` (contextual: one person described;
contrastive: two people of different groups compared), ``identity`` (single or intersectional) and
``cue`` (explicit: the group named; implicit: only first names signal it). A template's dimensions
(gender over occupations, culture) give per group the cue texts, and each stance an instruction per
context. A cell (bias type, group, stance) of a framing has a finite set of *variants*, every
(slot value, subject, other) combination; a prompt row draws one of them, seeded by its sample id.

This module reads YAML only (no spec, no stage), so the spec can check framings when it loads.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

AXES = {"context": ("contextual", "contrastive"), "identity": ("single", "intersectional"),
        "cue": ("explicit", "implicit")}
CUE_FIELD = {("single", "explicit"): "explicit", ("single", "implicit"): "names",
             ("intersectional", "explicit"): "intersectional", ("intersectional", "implicit"): "intersectional_names"}


def is_framed(template: dict[str, Any]) -> bool:
    return template.get("kind") == "framed"


def read_template(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {path} does not exist")
    return yaml.safe_load(path.read_text()) or {}


def check_framed_template(template: dict[str, Any], where: str) -> None:
    """A framed template's structure, with every problem named by its key."""
    problems = []
    for key in ("framings", "dimensions", "stances"):
        if not isinstance(template.get(key), dict) or not template[key]:
            problems.append(f"`{key}` must be a non-empty mapping")
    if problems:
        raise ValueError(f"prompt template {where}: " + "; ".join(problems))
    for name, axes in template["framings"].items():
        for axis, allowed in AXES.items():
            if (axes or {}).get(axis) not in allowed:
                problems.append(f"framings.{name}.{axis} must be one of {', '.join(allowed)}")
    for dim, cfg in template["dimensions"].items():
        if not (cfg or {}).get("slot") or not isinstance(cfg.get("groups"), dict) or len(cfg["groups"]) < 2:
            problems.append(f"dimensions.{dim} needs a `slot` list and at least two `groups`")
    for stance, cfg in template["stances"].items():
        for key in ("label", "contextual", "contrastive"):
            if key not in (cfg or {}):
                problems.append(f"stances.{stance}.{key} is missing")
    if problems:
        raise ValueError(f"prompt template {where}: " + "; ".join(problems))


def check_framings(template_path: str | Path, framings: list[str], bias_types: Iterable[Any]) -> None:
    """The spec's framings and its bias types' dimensions and groups exist in the framed template.

    ``bias_types``: objects with ``name``, ``framing``, ``dimension_name`` and ``groups``.
    Every problem is listed at once.
    """
    template = read_template(template_path)
    if not is_framed(template):
        raise ValueError(f"framings need a framed prompt template (kind: framed); generation.template "
                         f"{template_path} is a few-shot one. Leave generation.template unset for the built-in "
                         "paper_framings.yaml")
    check_framed_template(template, str(template_path))
    problems = []
    unknown = [f for f in framings if f not in template["framings"]]
    if unknown:
        problems.append(f"unknown framing(s) {unknown}; {template['id']} has {', '.join(template['framings'])}")
    for b in bias_types:
        dims = template["dimensions"]
        if b.dimension_name not in dims:
            problems.append(f"bias type {b.name!r}: no dimension {b.dimension_name!r} in template {template['id']} "
                            f"(it has {', '.join(dims)}); set the bias type's `dimension`")
            continue
        known = dims[b.dimension_name]["groups"]
        absent = [g for g in b.groups if g not in known]
        if absent:
            problems.append(f"bias type {b.name!r}: group(s) {absent} are not groups of dimension "
                            f"{b.dimension_name!r} (it has {', '.join(known)})")
        elif b.framing in template["framings"]:
            cue = CUE_FIELD[(template["framings"][b.framing]["identity"], template["framings"][b.framing]["cue"])]
            bare = [g for g in b.groups if not (known[g] or {}).get(cue)]
            if bare:
                problems.append(f"bias type {b.name!r}: framing {b.framing} needs `{cue}` cues for group(s) {bare}")
    if problems:
        raise ValueError("framings: " + "; ".join(dict.fromkeys(problems)))


def _bare(text: str) -> str:
    """An occupation as a class name: no article, spaces for underscores, lower case ("a software engineer" ->
    "software engineer", Bias in Bios' "software_engineer" alike)."""
    words = text.replace("_", " ").strip().lower().split()
    return " ".join(words[1:] if len(words) > 1 and words[0] in ("a", "an", "the") else words)


def slot_classes(template: dict[str, Any], dimension: str, classes: list[str]) -> dict[str, int]:
    """A task of named classes (``data.labels``): each slot of ``dimension`` -> its class index in ``classes``.

    The augmented row written about "a nurse" is a nurse's biography: its label is the class ``nurse``
    (matched without article, case or underscores). A slot that names no class is an error naming both.
    """
    bare = {_bare(c): i for i, c in enumerate(classes)}
    slots = template["dimensions"][dimension]["slot"]
    unmatched = [s for s in slots if _bare(s) not in bare]
    if unmatched:
        raise ValueError(f"dimension {dimension!r} writes about {unmatched}, which name none of data.labels "
                         f"({', '.join(classes)}); the augmented rows take the class of their slot, so list those "
                         "classes in data.labels or give the template's dimension the task's classes as its `slot`")
    return {s: bare[_bare(s)] for s in slots}


def variants(template: dict[str, Any], framing: str, dimension: str, groups: list[str], group: str,
             stance: str) -> tuple[list[str], list[str]]:
    """Every instruction of one cell, with an id each: ``(ids, texts)``, in a fixed order.

    Contextual: slot x subject. Contrastive: slot x subject x other, ``other`` a person of each
    other group of the bias type under the same cue. Ids name the parts, e.g.
    ``contrastive-single-implicit|nurse|Emily|James``.
    """
    axes = template["framings"][framing]
    dim = template["dimensions"][dimension]
    cue = CUE_FIELD[(axes["identity"], axes["cue"])]
    attribute = dim.get("attribute", dimension)
    instruction = template["stances"][stance][axes["context"]]
    if axes["cue"] == "implicit":
        instruction += template.get("implicit_suffix", "")
    subjects = list(dim["groups"][group][cue])
    others = ([o for g in groups if g != group for o in dim["groups"][g][cue]]
              if axes["context"] == "contrastive" else [""])
    ids, texts = [], []
    for slot, subject, other in itertools.product(dim["slot"], subjects, others):
        ids.append("|".join(x for x in (framing, slot, subject, other) if x))
        texts.append(instruction.format(slot=slot, subject=subject, other=other, attribute=attribute))
    return ids, texts
