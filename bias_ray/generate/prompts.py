"""Prompt construction: prompt number ``i`` of a job is a pure function of the spec and ``i``.

A :class:`PromptPlan` holds everything a worker needs (template, seed pools, stance split), so
prompts are built lazily inside Ray Data from index blocks instead of being materialised up
front, and a resumed job rebuilds exactly the same prompts. Every row carries its provenance
(template id and version, bias type, group, stance, seed row ids) and a ``sample_id`` that
hashes its inputs and the generation settings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from bias_ray.data.custom import data_identity, load_task_data
from bias_ray.data.loaders import load_bbq_template_statements, load_crows_pairs, load_toxigen, stable_id
from bias_ray.framings import check_framed_template, is_framed, slot_classes, variants
from bias_ray.generate.seeded_draws import choose
from bias_ray.models.identity import model_identity
from bias_ray.spec import RESOURCES, SweepSpec, serves_model_by_name

DEFAULT_TEMPLATE = RESOURCES / "prompts" / "toxigen_statements.yaml"
PROMPT_COLUMNS = ["sample_id", "index", "prompt", "bias_type", "group", "stance", "label", "seed_ids",
                  "template_id", "template_version"]


def load_template(path: str | Path | None = None) -> dict[str, Any]:
    """A prompt template YAML: ``id``, ``version`` and one entry per stance (header, labels)."""
    path = Path(path or DEFAULT_TEMPLATE)
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {path} does not exist")
    template = yaml.safe_load(path.read_text())
    for key in ("id", "version", "stances"):
        if key not in template:
            raise ValueError(f"prompt template {path}: key {key!r} is missing")
    if is_framed(template):  # instructions from framing axes (bias_ray/framings.py), no seed statements
        check_framed_template(template, str(path))
        return template
    for stance, cfg in template["stances"].items():
        for key in ("seed_label", "label", "header"):
            if key not in cfg:
                raise ValueError(f"prompt template {path}: stances.{stance}.{key} is missing")
    if "chat" in template and not (template["chat"] or {}).get("instruction"):
        raise ValueError(f"prompt template {path}: chat.instruction is missing (the user turn's request)")
    return template


def planned_label_shares(spec: SweepSpec) -> dict[int, float]:
    """The label shares a job will write, before it runs: ``generation.stances`` weights summed per the
    template's stance label (the filters may drop rows unevenly, so the finished job's can differ a little).
    A stance the template lacks is left out here; :func:`make_plan` refuses it by name."""
    template = load_template(spec.generation.template)
    if spec.data.labels and is_framed(template):  # every row takes its slot's class; slots are drawn evenly
        shares = {}
        for bias in spec.bias_type_specs:
            classes = list(slot_classes(template, bias.dimension_name, spec.data.labels).values())
            for y in classes:
                shares[y] = shares.get(y, 0.0) + 1 / len(classes) / len(spec.bias_type_specs)
        return shares
    stances = template["stances"]
    known = {s: w for s, w in spec.generation.stances.items() if s in stances}
    shares: dict[int, float] = {}
    for stance, weight in known.items():
        label = int(stances[stance]["label"])
        shares[label] = shares.get(label, 0.0) + weight / sum(known.values())
    return shares


def _stance_counts(stances: dict[str, float], n: int) -> dict[str, int]:
    """Split ``n`` samples over stances by their shares, exactly (largest remainder)."""
    total = sum(stances.values())
    raw = {s: n * w / total for s, w in stances.items()}
    counts = {s: int(v) for s, v in raw.items()}
    for s in sorted(raw, key=lambda s: raw[s] - counts[s], reverse=True)[: n - sum(counts.values())]:
        counts[s] += 1
    return counts


def settings_fingerprint(spec: SweepSpec, template: dict[str, Any], by_path: bool = False,
                         generator: str | None = None) -> str:
    """Hash of every setting that changes what a prompt yields; part of each sample id.

    The generator and a task data file are named by their content (:func:`model_identity`,
    :func:`data_identity`), so the same settings give the same ids, and the same texts, in any
    folder. ``by_path``: the fingerprint of jobs written before, which named both by their paths
    (``job.json`` without ``model_identity``); such a job resumes under it with its own ids.
    ``generator``: :func:`generator_identity`, when the caller has it already (hashing a folder reads it).
    """
    g = spec.generation
    extra: list = [] if spec.data.task == "toxigen" else [data_identity(spec.data, by_path)]  # ToxiGen's as before
    # only settings away from their defaults, so ids of earlier jobs stay the same
    if g.chat:
        extra += ["chat", g.system_prompt or ""]
    if spec.models.dtype != "auto":
        extra.append(spec.models.dtype)
    if generator is None:
        generator = generator_identity(spec, by_path)
    return stable_id(g.engine, generator, g.temperature, g.top_p, g.max_new_tokens,
                     g.max_prompt_tokens, g.few_shot, g.seed, template["id"], template["version"], *extra)


def generator_identity(spec: SweepSpec, by_path: bool = False) -> str:
    """The generator as sample ids name it: a local folder by its content, a hub id or served name by itself."""
    if by_path or serves_model_by_name(spec.generation.engine):  # an http generator is a served model's name
        return spec.models.generator
    return model_identity(spec.models.generator)


def sampling_params(spec: SweepSpec) -> dict[str, Any]:
    g = spec.generation
    return {"temperature": g.temperature, "top_p": g.top_p, "max_new_tokens": g.max_new_tokens,
            "max_prompt_tokens": g.max_prompt_tokens, "seed": g.seed}


@dataclass(frozen=True)
class _Cells:
    """Per-cell (segment x group) constants of a plan, as arrays a block of rows indexes into."""

    first_cell: np.ndarray  # segment -> its first cell; its cells are its groups in order
    group_count: np.ndarray  # segment -> groups of its bias type
    id_prefixes: list[bytes]  # cell -> the sample id's hashed text before the index within the segment
    headers: pa.Array  # cell -> the prompt's first line
    endings: pa.Array  # cell -> what follows the seed lines
    bias_types: pa.Array
    groups: pa.Array
    stances: pa.Array
    labels: np.ndarray
    line_labels: np.ndarray  # each pool line's own label (slot classes), -1 where the cell's label holds
    pool_start: np.ndarray  # cell -> where its seed pool starts in ``lines`` / ``seed_ids``
    pool_size: np.ndarray
    # every pool's seeds, pools one after another, then "" (where a row has fewer seeds than the block's most)
    lines: pa.Array  # "\n" + line prefix + text
    seed_ids: pa.Array  # id: a row's first seed
    later_seed_ids: pa.Array  # "," + id: its others


@dataclass(frozen=True)
class PromptPlan:
    """Everything needed to build prompt ``i`` anywhere: small enough to ship to every worker."""

    template: dict[str, Any]
    segments: list[tuple[int, str, str, int]]  # (first index, bias type, stance, count)
    groups: dict[str, list[str]]
    # (group, seed label) -> seed (ids, texts); framed templates: (bias type, group, stance) -> instruction variants
    pools: dict[tuple, tuple[list[str], list[str]]]
    few_shot: int
    seed: int
    fingerprint: str
    chat: bool = False  # the prompt is a chat's user turn (generate/chat.py), not an open line to continue
    generator_identity: str = ""  # the generator as the fingerprint names it (job.json's model_identity)
    # a task of named classes (data.labels): (bias type, group, stance) -> each variant's class, its slot's
    pool_labels: dict[tuple, list[int]] | None = None

    @property
    def total(self) -> int:
        start, _, _, count = self.segments[-1]
        return start + count

    def _locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts = np.array([s[0] for s in self.segments])
        seg = np.searchsorted(starts, indices, side="right") - 1
        return seg, indices - starts[seg]

    @cached_property
    def _cells(self) -> _Cells:
        first_cell, group_count, cells = [], [], []
        for _, bias, stance, _ in self.segments:
            first_cell.append(len(cells))
            group_count.append(len(self.groups[bias]))
            cells += [(bias, group, stance) for group in self.groups[bias]]
        framed = is_framed(self.template)
        prefix = "" if framed else self.template.get("line_prefix", "- ")
        pool_keys = list(self.pools)
        pool_start = np.cumsum([0] + [len(self.pools[key][0]) for key in pool_keys])
        headers, endings, labels, starts, sizes = [], [], [], [], []
        for bias, group, stance in cells:
            cfg = self.template["stances"][stance]
            name = group.replace("_", " ")
            if framed:  # the prompt is the drawn instruction alone (a chat's user turn, or a line to answer)
                headers.append("")
                endings.append("" if self.chat else "\n")
            elif self.chat:  # the seeds in the user turn, then the request; the assistant's reply continues the list
                headers.append(cfg["header"].format(group=name))
                endings.append("\n\n" + self.template["chat"]["instruction"].format(group=name))
            else:  # an open list line for the generator to complete
                headers.append(cfg["header"].format(group=name))
                endings.append("\n" + prefix.rstrip())
            labels.append(int(cfg["label"]))
            pool = pool_keys.index((bias, group, stance) if framed else (group, int(cfg["seed_label"])))
            starts.append(pool_start[pool])
            sizes.append(len(self.pools[pool_keys[pool]][0]))
        return _Cells(
            first_cell=np.array(first_cell, dtype=np.int64), group_count=np.array(group_count, dtype=np.int64),
            id_prefixes=["\x1f".join([self.fingerprint, *cell, ""]).encode() for cell in cells],
            headers=pa.array(headers, pa.string()), endings=pa.array(endings, pa.string()),
            bias_types=pa.array([c[0] for c in cells], pa.string()),
            groups=pa.array([c[1] for c in cells], pa.string()),
            stances=pa.array([c[2] for c in cells], pa.string()), labels=np.array(labels, dtype=np.int64),
            pool_start=np.array(starts, dtype=np.int64), pool_size=np.array(sizes, dtype=np.int64),
            lines=pa.array([(t if framed else f"\n{prefix}{t}") for key in pool_keys for t in self.pools[key][1]]
                           + [""], pa.string()),
            seed_ids=pa.array([i for key in pool_keys for i in self.pools[key][0]] + [""], pa.string()),
            later_seed_ids=pa.array([f",{i}" for key in pool_keys for i in self.pools[key][0]] + [""], pa.string()),
            line_labels=np.array([y for key in pool_keys for y in (self.pool_labels or {}).get(
                key, [-1] * len(self.pools[key][0]))] + [-1], dtype=np.int64),
        )

    def _ids(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, bytes]:
        """Cell and index within the segment per row, and the first 8 bytes of each sample id's SHA-1.

        ``sample_id = stable_id(fingerprint, bias type, group, stance, index within segment)``.
        """
        seg, within = self._locate(np.asarray(indices, dtype=np.int64))
        cells = self._cells
        cell = cells.first_cell[seg] + within % cells.group_count[seg]
        prefixes, sha1 = cells.id_prefixes, hashlib.sha1
        digests = b"".join([sha1(prefixes[c] + b"%d" % i).digest()[:8] for c, i in zip(cell.tolist(), within.tolist())])
        return cell, within, digests

    @staticmethod
    def _hex_ids(digests: bytes) -> pa.Array:
        n = len(digests) // 8
        offsets = np.arange(0, 16 * n + 1, 16, dtype=np.int32)
        text = pa.py_buffer(digests.hex().encode())  # 16 hex digits a row
        return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), text])

    def sample_ids(self, indices: np.ndarray) -> list[str]:
        """The ids of prompts ``indices`` without building them (cheap: one hash each)."""
        return self._hex_ids(self._ids(indices)[2]).to_pylist()

    def table(self, indices: np.ndarray) -> pa.Table:
        """The prompt rows for ``indices`` (any order, any subset) as an Arrow table, built a block at a time.

        Row ``r`` (index ``i`` in its segment, group ``g``) draws its few-shot seeds with
        ``default_rng([seed, int(sample_id[:12], 16)]).choice(len(pool), min(few_shot, len(pool)),
        replace=False)``: seeded by the sample id, so a prompt never depends on how indices were
        batched (:mod:`bias_ray.generate.seeded_draws` draws a whole block at once).
        """
        indices = np.asarray(indices, dtype=np.int64)
        n = len(indices)
        cells = self._cells
        cell, _, digests = self._ids(indices)
        head = np.frombuffer(digests, dtype=np.uint8).reshape(n, 8)[:, :6].astype(np.uint64)
        keys = np.zeros(n, dtype=np.uint64)
        for byte in range(6):  # the first 12 hex digits of the id, as an int
            keys = (keys << np.uint64(8)) | head[:, byte]
        sizes = cells.pool_size[cell]
        picks = choose(self.seed, keys, sizes, np.minimum(self.few_shot, sizes))
        # a row's picks, then -1s: those take the "" after the pools (no nulls: a join skipping nulls
        # drops all-null rows in pyarrow 26)
        at = np.where(picks < 0, len(cells.lines) - 1, cells.pool_start[cell][:, None] + picks)
        taken = [pa.array(at[:, t]) for t in range(picks.shape[1])]
        cell_at = pa.array(cell)
        prompt = pc.binary_join_element_wise(cells.headers.take(cell_at), *[cells.lines.take(t) for t in taken],
                                             cells.endings.take(cell_at), "")
        seed_ids = (pc.binary_join_element_wise(cells.seed_ids.take(taken[0]),
                                                *[cells.later_seed_ids.take(t) for t in taken[1:]], "")
                    if taken else pa.array([""] * n, pa.string()))
        one = pa.array(np.zeros(n, dtype=np.int64))
        columns = {
            "sample_id": self._hex_ids(digests), "index": pa.array(indices), "prompt": prompt,
            "bias_type": cells.bias_types.take(cell_at), "group": cells.groups.take(cell_at),
            # label: the stance's, or (data.labels) the class of the drawn variant's slot
            "stance": cells.stances.take(cell_at),
            "label": pa.array(cells.line_labels[at[:, 0]] if self.pool_labels else cells.labels[cell]),
            "seed_ids": seed_ids,
            "template_id": pa.array([str(self.template["id"])], pa.string()).take(one),
            "template_version": pa.array([int(self.template["version"])], pa.int64()).take(one),
        }
        return pa.table(columns)

    def rows(self, indices: np.ndarray) -> pd.DataFrame:
        """The prompt rows for ``indices`` (any order, any subset) as a DataFrame."""
        return self.table(indices).to_pandas()


def _toxigen_seeds(spec: SweepSpec) -> pd.DataFrame:
    rows = load_toxigen(spec.data.resolved_root, spec.data.test_fraction)
    return rows[rows["split"] == "train"]  # never the statements the sweep evaluates on


def _task_data_seeds(spec: SweepSpec) -> pd.DataFrame:
    """The train rows of the spec's own fine-tuning data (``data.task``: ToxiGen, a file or a HF dataset)."""
    rows = load_task_data(spec.data)
    return rows[rows["split"] == "train"]  # never the rows the sweep evaluates on


def _crows_pairs_seeds(spec: SweepSpec) -> pd.DataFrame:
    """Each CrowS-Pairs pair gives a stereotypical (label 1) and an anti-stereotypical (label 0) seed."""
    pairs = load_crows_pairs(spec.data.resolved_root)
    stereo = pd.DataFrame({"id": pairs["id"] + ":stereo", "text": pairs["text"], "label": 1, "group": pairs["group"]})
    anti = pd.DataFrame({"id": pairs["id"] + ":anti", "text": pairs["text_anti"], "label": 0, "group": pairs["group"]})
    return pd.concat([stereo, anti], ignore_index=True)


def _bbq_template_seeds(spec: SweepSpec) -> pd.DataFrame:
    """BBQ template stories, stereotype-consistent (label 1) and -inconsistent (label 0), per category."""
    return load_bbq_template_statements(spec.data.resolved_root)


# seed source -> (loader of id,text,label,group rows, the BiasType field naming its groups there)
SEED_SOURCES = {
    "data": (_task_data_seeds, "groups"),
    "toxigen": (_toxigen_seeds, "groups"),
    "crows_pairs": (_crows_pairs_seeds, "crows_categories"),
    "bbq_templates": (_bbq_template_seeds, "bbq_categories"),
}


def load_seed_rows(spec: SweepSpec, template: dict[str, Any]) -> pd.DataFrame:
    """The real statements a template draws its few-shot examples from (``seed_source``, default data)."""
    source = template.get("seed_source", "data")
    if source not in SEED_SOURCES:
        raise ValueError(f"prompt template {template['id']!r}: unknown seed_source {source!r}; "
                         f"allowed: {', '.join(SEED_SOURCES)}")
    return SEED_SOURCES[source][0](spec)


def make_plan(spec: SweepSpec, seed_rows: pd.DataFrame | None = None,
              template: dict[str, Any] | None = None) -> PromptPlan:
    """Plan the prompts of every bias type in the spec, spread evenly over its groups and the stances."""
    template = template or load_template(spec.generation.template)
    gen = spec.generation
    missing = [s for s in gen.stances if s not in template["stances"]]
    if missing:
        raise ValueError(f"prompt template {template['id']!r} has no stance(s) {missing}; "
                         f"it has {sorted(template['stances'])}")
    if is_framed(template):
        return _framed_plan(spec, template)
    if seed_rows is None:
        seed_rows = load_seed_rows(spec, template)
    group_field = SEED_SOURCES[template.get("seed_source", "data")][1]
    segments, start = [], 0
    groups: dict[str, list[str]] = {}
    pools: dict[tuple[str, int], tuple[list[str], list[str]]] = {}
    for bias in spec.bias_type_specs:
        groups[bias.name] = list(getattr(bias, group_field))
        if not groups[bias.name]:
            raise ValueError(f"bias type {bias.name!r} has no {group_field}, which prompt template "
                             f"{template['id']!r} needs; add them to the bias type or use another template")
        for stance, count in _stance_counts(gen.stances, gen.samples_per_bias_type).items():
            if count:
                segments.append((start, bias.name, stance, count))
                start += count
            label = int(template["stances"][stance]["seed_label"])
            for group in groups[bias.name]:
                if (group, label) in pools:  # shared by stances with one seed label, and by bias types
                    continue
                pool = seed_rows[(seed_rows["group"] == group) & (seed_rows["label"] == label)]
                if pool.empty:
                    # a group without seed statements of this stance's label (ToxiGen has no neutral statement
                    # about trans people): the same label's seeds about the bias type's other groups, never the
                    # group's statements of the other label, which would write e.g. hate into rows labelled neutral
                    pool = seed_rows[seed_rows["group"].isin(groups[bias.name]) & (seed_rows["label"] == label)]
                if not len(seed_rows[seed_rows["group"] == group]):
                    raise ValueError(
                        f"bias type {bias.name!r}: group {group!r} has no seed statements in the real data "
                        f"({template.get('seed_source', 'data')}); use its group names "
                        "(see bias_ray/resources/bias_types.yaml)"
                    )
                if pool.empty:
                    raise ValueError(
                        f"bias type {bias.name!r}: stance {stance!r} needs seed statements of label {label}, and "
                        f"none of its groups ({', '.join(groups[bias.name])}) has one in the real data; drop the "
                        "stance from generation.stances or use a template whose seeds exist"
                    )
                pool = pool.sort_values("id")  # a stable order whatever the loader's
                pools[(group, label)] = (pool["id"].astype(str).tolist(), pool["text"].astype(str).tolist())
    if gen.chat and "chat" not in template:
        raise ValueError(f"generation.chat is on but prompt template {template['id']!r} has no chat entry; add "
                         "`chat: {instruction: ...}` to it (see bias_ray/resources/prompts/toxigen_statements.yaml)")
    generator = generator_identity(spec)
    return PromptPlan(template=template, segments=segments, groups=groups, pools=pools, few_shot=gen.few_shot,
                      seed=gen.seed, fingerprint=settings_fingerprint(spec, template, generator=generator),
                      chat=gen.chat, generator_identity=generator)


def _framed_plan(spec: SweepSpec, template: dict[str, Any]) -> PromptPlan:
    """A framed template's plan: per (bias type, group, stance) its instruction variants, one drawn a row."""
    unframed = [b.name for b in spec.bias_type_specs if not b.framing]
    if unframed:
        raise ValueError(f"prompt template {template['id']!r} is framed, but bias type(s) {unframed} have no framing; "
                         "list the framings under `framings:` in the spec")
    gen = spec.generation
    segments, start = [], 0
    groups: dict[str, list[str]] = {}
    pools: dict[tuple, tuple[list[str], list[str]]] = {}
    pool_labels: dict[tuple, list[int]] = {}
    for bias in spec.bias_type_specs:
        groups[bias.name] = list(bias.groups)
        classes = slot_classes(template, bias.dimension_name, spec.data.labels) if spec.data.labels else None
        for stance, count in _stance_counts(gen.stances, gen.samples_per_bias_type).items():
            if count:
                segments.append((start, bias.name, stance, count))
                start += count
            for group in bias.groups:
                key = (bias.name, group, stance)
                pools[key] = variants(template, bias.framing, bias.dimension_name, list(bias.groups), group, stance)
                if classes:  # a variant's id is framing|slot|subject[|other]
                    pool_labels[key] = [classes[vid.split("|")[1]] for vid in pools[key][0]]
    generator = generator_identity(spec)
    return PromptPlan(template=template, segments=segments, groups=groups, pools=pools, few_shot=1, seed=gen.seed,
                      fingerprint=settings_fingerprint(spec, template, generator=generator), chat=gen.chat,
                      generator_identity=generator, pool_labels=pool_labels or None)


def build_prompts(spec: SweepSpec, seed_rows: pd.DataFrame | None = None,
                  template: dict[str, Any] | None = None) -> pd.DataFrame:
    """All prompts of the spec at once (small jobs and tests; the pipeline builds them lazily)."""
    plan = make_plan(spec, seed_rows, template)
    return plan.rows(np.arange(plan.total))
