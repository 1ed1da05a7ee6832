"""The tiny model's pretraining corpus: local real text with every evaluation item taken out.

Sources (all human-written, under the data root):

- ``toxigen_train``: the ToxiGen statements of the *train* split, computed by the very function
  the trials use (:func:`bias_ray.data.loaders.load_toxigen` with the spec's ``test_fraction``), so
  the held-out statements a trial evaluates on are never pretrained on;
- ``toxigen_demonstrations``: the hand-written seed statements of ``toxigen/demonstrations``
  (ToxiGen built its prompts from them, so many *are* held-out statements: those are dropped below).

Exclusion rule, on normalised text (:func:`normalise`: lower case, runs of non-alphanumerics to
one space): a line is dropped when it equals, contains, or is contained in any evaluation item
(:func:`evaluation_items`: ToxiGen test split, HateCheck test cases, CrowS-Pairs sentences, BBQ
contexts and questions), matching whole words. ``tests/test_pretrain.py`` checks the result.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bias_ray.data.loaders import load_bbq, load_crows_pairs, load_toxigen

HATECHECK_CSV = Path("hatecheck") / "test_suite_cases.csv"
DEMO_FILE = re.compile(r"^(hate|neutral)_(.+?)(?:_sentences)?\.txt$")


def normalise(text: str) -> str:
    """Lower case, every run of non-alphanumeric characters one space, stripped."""
    return re.sub(r"[^a-z0-9]+", " ", str(text).lower()).strip()


def evaluation_items(data_root: str | Path, test_fraction: float) -> dict[str, list[str]]:
    """Every text any evaluation reads, by benchmark; a benchmark whose files are absent is empty."""
    root = Path(data_root)
    toxigen = load_toxigen(root, test_fraction)
    items = {"toxigen_test": toxigen.loc[toxigen["split"] == "test", "text"].tolist()}
    hatecheck = root / HATECHECK_CSV
    items["hatecheck"] = pd.read_csv(hatecheck)["test_case"].astype(str).tolist() if hatecheck.is_file() else []
    try:
        crows = load_crows_pairs(root)
        items["crows_pairs"] = crows["text"].tolist() + crows["text_anti"].tolist()
    except FileNotFoundError:
        items["crows_pairs"] = []
    try:
        bbq = load_bbq(root)
        items["bbq"] = list(dict.fromkeys(bbq["context"].tolist() + bbq["question"].tolist()))
    except (FileNotFoundError, ValueError):
        items["bbq"] = []
    return items


class EvalFilter:
    """Whole-word equality/containment of normalised text against a fixed set of evaluation items."""

    def __init__(self, items: list[str]) -> None:
        self.items = sorted({n for n in (normalise(t) for t in items) if n})
        self._joined = "\x00".join(f" {n} " for n in self.items)

    def overlaps(self, lines: list[str]) -> list[bool]:
        """Per line: does it equal, contain or lie inside some item (whole words, normalised)?"""
        norm = [normalise(t) for t in lines]
        joined_lines = "\x00".join(f" {n} " for n in norm)
        hit = [bool(n) and f" {n} " in self._joined for n in norm]  # equal to or inside an item
        starts = [0]
        for n in norm:
            starts.append(starts[-1] + len(n) + 3)
        for item in self.items:  # an item inside a line: find every line holding it
            needle, pos = f" {item} ", joined_lines.find(f" {item} ")
            while pos != -1:
                line = _line_at(starts, pos)
                hit[line] = True
                pos = joined_lines.find(needle, starts[line + 1])
        return hit


def _line_at(starts: list[int], pos: int) -> int:
    import bisect

    return bisect.bisect_right(starts, pos) - 1


@dataclass
class Corpus:
    """Statements with their group and stance label (1 hate, 0 neutral), split into train and held-out."""

    rows: pd.DataFrame  # text, group, label, source, part ("train" | "heldout")
    excluded: dict[str, int] = field(default_factory=dict)  # source -> lines dropped as evaluation items

    @property
    def train(self) -> pd.DataFrame:
        return self.rows[self.rows["part"] == "train"]

    @property
    def heldout(self) -> pd.DataFrame:
        return self.rows[self.rows["part"] == "heldout"]

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for t, g, y, p in self.rows[["text", "group", "label", "part"]].itertuples(index=False):
            h.update(f"{t}\x1f{g}\x1f{y}\x1f{p}\x1e".encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        by = self.rows.groupby(["source", "part"]).size()
        return {
            "sources": {s: {p: int(by.get((s, p), 0)) for p in ("train", "heldout")}
                        for s in sorted(self.rows["source"].unique())},
            "excluded_as_evaluation_items": dict(self.excluded),
            "train_lines": int((self.rows["part"] == "train").sum()),
            "heldout_lines": int((self.rows["part"] == "heldout").sum()),
            "train_chars": int(self.train["text"].str.len().sum()),
            "fingerprint": self.fingerprint(),
        }


def _demonstrations(root: Path) -> pd.DataFrame:
    rows = []
    for f in sorted((root / "toxigen" / "demonstrations").glob("*/*.txt")):
        m = DEMO_FILE.match(f.name)
        if not m:
            continue
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                rows.append({"text": line.strip(), "group": m.group(2), "label": int(m.group(1) == "hate")})
    return pd.DataFrame(rows, columns=["text", "group", "label"])


def _heldout(text: str, share: float) -> bool:
    return int(hashlib.sha1(normalise(text).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def build_corpus(data_root: str | Path, test_fraction: float = 0.3, heldout_share: float = 0.1) -> Corpus:
    """The pretraining corpus (module docstring): real statements, no evaluation item, a held-out part."""
    root = Path(data_root)
    toxigen = load_toxigen(root, test_fraction)
    train_split = toxigen.loc[toxigen["split"] == "train", ["text", "group", "label"]].assign(source="toxigen_train")
    demos = _demonstrations(root).assign(source="toxigen_demonstrations")
    rows = pd.concat([train_split, demos], ignore_index=True)
    rows = rows[~rows["text"].map(normalise).duplicated()].reset_index(drop=True)  # a line once, first source wins
    items = [t for texts in evaluation_items(root, test_fraction).values() for t in texts]
    bad = pd.Series(EvalFilter(items).overlaps(rows["text"].tolist()), index=rows.index)
    excluded = rows.loc[bad, "source"].value_counts().to_dict()
    rows = rows[~bad].reset_index(drop=True)
    rows["part"] = ["heldout" if _heldout(t, heldout_share) else "train" for t in rows["text"]]
    return Corpus(rows=rows, excluded={k: int(v) for k, v in excluded.items()})


def documents(rows: pd.DataFrame, seed: int, lines_per_doc: tuple[int, int] = (3, 6)) -> list[str]:
    """Statements packed into few-shot lists like the generation prompts: same group and stance each.

    ``"The following are statements about {group}:\\n- s1\\n- s2\\n..."``; the packing is redrawn
    per ``seed`` (each pretraining epoch sees new lists of the same statements).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    docs = []
    for (group, _), part in rows.groupby(["group", "label"], sort=True):
        texts = part["text"].tolist()
        order = rng.permutation(len(texts))
        i = 0
        while i < len(order):
            k = int(rng.integers(lines_per_doc[0], lines_per_doc[1] + 1))
            chunk = [texts[j] for j in order[i : i + k]]
            i += k
            header = f"The following are statements about {str(group).replace('_', ' ')}:"
            docs.append("\n".join([header, *(f"- {t}" for t in chunk)]))
    rng.shuffle(docs)
    return docs
