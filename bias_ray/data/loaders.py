"""Loaders for the real data in ``../shared/data`` (or any folder laid out the same way).

Every loader returns a pandas DataFrame with at least the columns of :data:`SCHEMA`
(``id, text, label, group, bias_type, split, source``); benchmark-specific columns follow.
Splits are deterministic (a hash of the row id), so every process agrees on them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd

from bias_ray.catalog import bias_type_catalog

SCHEMA = ["id", "text", "label", "group", "bias_type", "split", "source"]
TOXIGEN_LABELS = {"neutral": 0, "hate": 1}


def stable_id(*parts: object) -> str:
    """A short deterministic id from the given parts."""
    return hashlib.sha1("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:16]


def split_of(row_id: str, test_fraction: float) -> str:
    """``test`` for a ``test_fraction`` share of ids (a hash of the id), else ``train``."""
    bucket = int(hashlib.sha1(row_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_fraction else "train"


def _group_to_bias_type() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, entry in bias_type_catalog().items():
        for g in entry["groups"]:
            out.setdefault(g, name)
    return out


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing ({what}); point data.root (or BIAS_RAY_DATA) at the folder that holds "
            "bbq/, crows_pairs/, toxigen/ and hatecheck/ as described in ../shared/data/README.md"
        )
    return path


def parse_toxigen_line(line: str) -> list[str]:
    """One ToxiGen prompt line is several statements joined by a literal backslash-n and dash."""
    parts = line.strip().split("\\n-")
    out = []
    for p in parts:
        p = p.strip().removeprefix("- ").removeprefix("-").strip()
        if p:
            out.append(p)
    return out


def load_toxigen(root: str | Path, test_fraction: float = 0.3, groups: list[str] | None = None) -> pd.DataFrame:
    """Unique human-written ToxiGen statements, labelled hate (1) or neutral (0) per target group."""
    prompts = _require(Path(root) / "toxigen" / "prompts", "ToxiGen prompt files")
    group_bias = _group_to_bias_type()
    rows, seen = [], set()
    for file in sorted(prompts.glob("*_1k.txt")):
        stance, _, rest = file.name.partition("_")
        group = rest.removesuffix("_1k.txt")
        if stance not in TOXIGEN_LABELS or (groups and group not in groups):
            continue
        for line in file.read_text(encoding="utf-8").splitlines():
            for text in parse_toxigen_line(line):
                key = (group, stance, text)
                if key in seen:
                    continue
                seen.add(key)
                rid = stable_id("toxigen", *key)
                rows.append(
                    {
                        "id": rid,
                        "text": text,
                        "label": TOXIGEN_LABELS[stance],
                        "group": group,
                        "bias_type": group_bias.get(group, "other"),
                        "split": split_of(rid, test_fraction),
                        "source": "toxigen",
                    }
                )
    if not rows:
        raise ValueError(f"no ToxiGen statements found under {prompts} for groups {groups}")
    return pd.DataFrame(rows, columns=SCHEMA)


def load_crows_pairs(root: str | Path) -> pd.DataFrame:
    """CrowS-Pairs minimal pairs as the authors define them (Nangia et al. 2020, nyu-mll/crows-pairs).

    ``text`` is ``sent_more``, the more stereotypical sentence, and ``text_anti`` is ``sent_less``, in
    ``stereo`` and ``antistereo`` pairs alike: the authors' ``scripts/metric.py`` counts a pair as biased
    when the model prefers ``sent_more``, whatever the direction. ``direction`` is the pair's
    ``stereo_antistereo`` value (the authors' README: ``stereo``, sent_more demonstrates a stereotype of a
    historically disadvantaged group; ``antistereo``, sent_less violates one; the other sentence names a
    contrasting advantaged group); ``label`` is 1 for ``stereo`` pairs.
    """
    path = _require(Path(root) / "crows_pairs" / "crows_pairs_anonymized.csv", "CrowS-Pairs csv")
    raw = pd.read_csv(path)
    missing = {"sent_more", "sent_less", "stereo_antistereo", "bias_type"} - set(raw.columns)
    if missing:
        raise ValueError(f"{path}: columns {sorted(missing)} are missing; is this the CrowS-Pairs file?")
    unknown = set(raw["stereo_antistereo"]) - {"stereo", "antistereo"}
    if unknown:
        raise ValueError(f"{path}: stereo_antistereo holds {sorted(map(str, unknown))}; expected stereo or antistereo")
    df = pd.DataFrame(
        {
            "id": [stable_id("crows", i) for i in raw.index],
            "text": raw["sent_more"],
            "text_anti": raw["sent_less"],
            "label": raw["stereo_antistereo"].eq("stereo").astype(int),
            "group": raw["bias_type"],
            "bias_type": raw["bias_type"],
            "split": "test",
            "source": "crows_pairs",
            "direction": raw["stereo_antistereo"],
        }
    )
    return df


HATECHECK_LABELS = {"non-hateful": 0, "hateful": 1}
HATECHECK_COLUMNS = ["functionality", "case_id", "test_case", "label_gold", "target_ident"]


def hatecheck_slug(target_ident: str) -> str:
    """A HateCheck target as a metric-key word: ``"trans people"`` -> ``trans``, ``"Muslims"`` -> ``muslims``."""
    return str(target_ident).strip().lower().removesuffix(" people").replace(" ", "_")


def _hatecheck_group_to_bias_type() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, entry in bias_type_catalog().items():
        for g in entry.get("hatecheck_groups", []):
            out.setdefault(g, name)
    return out


def load_hatecheck(root: str | Path) -> pd.DataFrame:
    """HateCheck functional test cases (Röttger et al. 2021), all ``test``: label 1 hateful, 0 non-hateful.

    ``group`` is the case's ``target_ident`` (e.g. ``"trans people"``; empty for the functionalities
    without a target), ``bias_type`` the built-in bias type whose ``hatecheck_groups`` list it (else
    ``other``); ``functionality`` and ``case_id`` are kept.
    """
    path = _require(Path(root) / "hatecheck" / "test_suite_cases.csv", "HateCheck test suite csv")
    raw = pd.read_csv(path)
    missing = set(HATECHECK_COLUMNS) - set(raw.columns)
    if missing:
        raise ValueError(f"{path}: columns {sorted(missing)} are missing; expected HateCheck's test_suite_cases.csv "
                         f"with {HATECHECK_COLUMNS} (paul-rottger/hatecheck-data)")
    unknown = set(raw["label_gold"]) - set(HATECHECK_LABELS)
    if unknown:
        raise ValueError(f"{path}: label_gold holds {sorted(map(str, unknown))}; expected {sorted(HATECHECK_LABELS)}")
    group = raw["target_ident"].fillna("").astype(str).str.strip()
    group_bias = _hatecheck_group_to_bias_type()
    return pd.DataFrame(
        {
            "id": [stable_id("hatecheck", c) for c in raw["case_id"]],
            "text": raw["test_case"].astype(str).str.strip(),
            "label": raw["label_gold"].map(HATECHECK_LABELS).astype(int),
            "group": group,
            "bias_type": group.map(lambda g: group_bias.get(g, "other")),
            "split": "test",
            "source": "hatecheck",
            "functionality": raw["functionality"],
            "case_id": raw["case_id"],
        }
    )


def load_bbq(root: str | Path, categories: list[str] | None = None) -> pd.DataFrame:
    """BBQ questions with their three answers, context condition and stereotyped groups."""
    folder = _require(Path(root) / "bbq" / "data", "BBQ jsonl files")
    rows = []
    for file in sorted(folder.glob("*.jsonl")):
        if categories and file.stem not in categories:
            continue
        with open(file, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    ex = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{file}:{lineno}: malformed BBQ row: {err}") from None
                info = ex["answer_info"]
                stereotyped = [s.lower() for s in ex["additional_metadata"].get("stereotyped_groups", [])]
                rows.append(
                    {
                        "id": stable_id("bbq", ex["category"], ex["example_id"]),
                        "text": f"{ex['context']} {ex['question']}",
                        "label": int(ex["label"]),
                        "group": ",".join(stereotyped),
                        "bias_type": ex["category"],
                        "split": "test",
                        "source": "bbq",
                        "context": ex["context"],
                        "question": ex["question"],
                        "answers": [ex["ans0"], ex["ans1"], ex["ans2"]],
                        "answer_groups": [info[f"ans{i}"][1] for i in range(3)],
                        "context_condition": ex["context_condition"],
                        "question_polarity": ex["question_polarity"],
                        "stereotyped_groups": stereotyped,
                    }
                )
    if not rows:
        raise ValueError(f"no BBQ rows under {folder} for categories {categories}")
    return pd.DataFrame(rows)


def _bbq_words(spec: str) -> dict[str, str]:
    """``"WORD1: [luggage, bag]; WORD2: [released, let go]"`` -> the first option of each word."""
    out = {}
    for name, options in re.findall(r"(WORD\d+)\s*:\s*\[([^\]]*)\]", spec or ""):
        first = options.split(",")[0].strip()
        if first:
            out[name] = first
    return out


def load_bbq_template_statements(root: str | Path) -> pd.DataFrame:
    """Short stories from the BBQ template sheets that do (label 1) or do not (label 0) follow a stereotype.

    Each template's ambiguous plus disambiguating context is filled twice: once with the stereotyped
    group in the role of the negative answer (stereotype-consistent) and once with another group of
    the same category from ``vocabulary.csv`` in that role (stereotype-inconsistent). Templates whose
    names are not in the vocabulary (proper names, coded groups) are left out. ``group`` and
    ``bias_type`` are the sheet's name (e.g. ``Religion``).
    """
    folder = _require(Path(root) / "bbq" / "templates", "BBQ template sheets")
    vocab = pd.read_csv(_require(folder / "vocabulary.csv", "BBQ vocabulary"))
    names_by_category = {
        c.strip(): sorted(set(g["Name"].astype(str).str.strip())) for c, g in vocab.groupby("Category")
    }
    rows = []
    for file in sorted(folder.glob("*.csv")):
        category = file.stem
        names = names_by_category.get(category)
        if not names:
            continue
        sheet = pd.read_csv(file, dtype=str).fillna("")
        by_lower = {n.lower(): n for n in names}
        for i, t in sheet.iterrows():
            slot = re.search(r"\{\{(NAME[12])\}\}", t.get("Answer_negative", ""))
            try:
                stereotyped = [s.lower() for s in json.loads(t.get("Known_stereotyped_groups") or "[]")]
            except json.JSONDecodeError:
                continue
            if not slot or not t.get("Ambiguous_Context"):
                continue
            words = _bbq_words(t.get("Lexical_diversity", ""))
            template = f"{t['Ambiguous_Context']} {t['Disambiguating_Context']}"
            for s in stereotyped:
                if s not in by_lower:
                    continue
                others = [n for n in names if n.lower() not in stereotyped]
                if not others:
                    continue
                other = others[int(stable_id(category, i, s), 16) % len(others)]
                negative, positive = slot.group(1), "NAME2" if slot.group(1) == "NAME1" else "NAME1"
                for label, (neg, pos) in ((1, (by_lower[s], other)), (0, (other, by_lower[s]))):
                    text = template.replace(f"{{{{{negative}}}}}", neg).replace(f"{{{{{positive}}}}}", pos)
                    for w, v in words.items():
                        text = text.replace(f"{{{{{w}}}}}", v)
                    if "{{" in text:
                        continue
                    rows.append({"id": stable_id("bbq-template", category, i, s, label), "text": text.strip(),
                                 "label": label, "group": category, "bias_type": category, "split": "train",
                                 "source": "bbq_templates"})
    return pd.DataFrame(rows, columns=SCHEMA)
