"""BBQ question sets built from the official template sheets (Parrish et al., 2022).

Only six of BBQ's categories ship as jsonl in ``../shared/data/bbq/data``; all eleven template
sheets ship in ``../shared/data/bbq/templates``. This module expands a sheet the way the BBQ
authors' generator (nyu-mll/BBQ, ``generate_from_template_all_categories.py``) does:

* **Name pairs.** Each template row is filled with pairs ``(NAME1, NAME2)``:
  - a ``Names`` column (``NAME1: [a, b]; NAME2: [c, d]``) gives both lists; every a x c pair is used;
  - otherwise the category's words in ``vocabulary.csv`` (rows with ``Pilot_include == "No"`` dropped).
    In Race_ethnicity, Religion, Nationality and Sexual_orientation ("stereotyping subset") NAME1 is
    one of the row's ``Known_stereotyped_groups`` and NAME2 a non-target word (at most 5 sampled);
    a row with a ``Subcategory`` draws its words from that subcategory (at most 5); SES occupation rows
    pair a low-SES occupation with every high-SES one and vice versa; elsewhere every ordered pair
    of at most 5 sampled words;
  - ``Proper_nouns_only == TRUE`` rows use first names from ``vocabulary_proper_names.csv``:
    Gender_identity pairs 5 sampled women's names with 5 sampled men's names (names without an
    ethnic association, ``first_only``); Race_ethnicity pairs 5 names of the stereotyped ethnicities
    with 5 names of the same gender and a non-target ethnicity, each with a random last name of its
    own ethnicity; other categories pair 6 sampled ``first_only`` names with each other.
  In the stereotyping subset, proper-name rows and SES occupation rows, each pair is also used with
  NAME1 and NAME2 swapped, so the target appears in both positions.
* **Filling.** ``{{NAME1}}``/``{{NAME2}}`` and the ``Lexical_diversity`` words ``{{WORD1}}``/``{{WORD2}}``
  (one option drawn per pair) are substituted in every text column; "a" becomes "an" before a vowel
  when a filled name starts with one (except "a European"); "lesbian man" -> "lesbian woman" and
  "Latino woman" -> "Latina woman", as in the original.
* **Four examples per filled pair**: ambiguous context (gold: the unknown option) and ambiguous +
  disambiguating context (gold: ``Answer_negative`` for the negative question, ``Answer_non_negative``
  for the non-negative one), each with the negative and the non-negative question. The three answers
  are the two filled answers and one of ten "unknown" phrasings, in a shuffled order (both drawn once
  per pair, as in the original). ``Known_stereotyped_groups`` gives the bias target.

All draws come from one ``random.Random(seed)``, so a seed fixes the whole set. Each answer also
carries a group label the BBQ scorer can match against the stereotyped groups (``F``/``M`` for
gender words, the ethnicity for a full name, ``low SES``/``high SES``); the raw label the original
generator would write is kept in ``answer_info``. The intersectional sheets (Race_x_gender,
Race_x_SES) have a different layout and are not expanded here.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd

UNKNOWN_OPTIONS = (
    "Unknown", "Cannot be determined", "Can't be determined", "Not answerable", "Not known",
    "Not enough info", "Not enough information", "Cannot answer", "Can't answer", "Undetermined",
)
STEREOTYPING_SUBSET = frozenset({"Race_ethnicity", "Religion", "Nationality", "Sexual_orientation"})
#: The sheets this module expands (the intersectional ones have another layout).
TEMPLATE_CATEGORIES = (
    "Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance",
    "Race_ethnicity", "Religion", "SES", "Sexual_orientation",
)
_GENDER_WORDS = {"woman": "F", "girl": "F", "female": "F", "wife": "F", "f": "F",
                 "man": "M", "boy": "M", "male": "M", "husband": "M", "m": "M"}


def parse_slot_lists(spec: str) -> tuple[list[str], list[str]]:
    """``"NAME1: [a, b]; NAME2: [c]"`` (or ``WORD1``/``WORD2``, braces optional) -> ``(["a", "b"], ["c"])``."""
    first: list[str] = []
    second: list[str] = []
    for part in spec.split(";"):
        match = re.match(r"\s*\{*\s*(?:NAME|WORD)([12])\s*\}*\s*:\s*\[?([^\]]*)\]?", part)
        if match:
            options = [w.strip() for w in match.group(2).split(",") if w.strip()]
            (first if match.group(1) == "1" else second).extend(options)
    return first, second


def fill_slots(text: str, name1: str, name2: str, word1: str = "", word2: str = "") -> str:
    """Substitute the names and lexical-diversity words into one template text, with the original's fixes."""
    out = text.replace("{{NAME1}}", name1).replace("{{NAME2}}", name2)
    out = out.replace("{{WORD1}}", word1).replace("{{WORD2}}", word2) if (word1 or word2) else out
    out = out.replace("lesbian man", "lesbian woman").replace("Latino woman", "Latina woman")
    if re.match(r"[aeiou]", name1.lower()) or re.match(r"[aeiou]", name2.lower()):
        out = re.sub(r"(\s[aA])(\s[aAeEiIoOuU])", r"\1n\2", out).replace(" an European", " a European")
    return out


def scorer_group(category: str, info: str) -> str:
    """The raw answer label -> a label the BBQ scorer matches against ``Known_stereotyped_groups``."""
    label = str(info).strip()
    if re.fullmatch(r"[FM]-.+", label):  # a full name in Race_ethnicity: "F-Black" -> "Black"
        return label[2:]
    if "_" in label:  # a proper name with a template label: "trans_F" -> "trans"
        label = label.split("_")[0]
    if label in ("lowSES", "highSES"):
        return label[:-3] + " SES"
    if category == "Gender_identity" and label.lower() in _GENDER_WORDS:
        return _GENDER_WORDS[label.lower()]
    return label


@dataclass(frozen=True)
class NamePair:
    """What fills ``{{NAME1}}`` and ``{{NAME2}}``, with each name's group label (as the original records it)."""

    name1: str
    name2: str
    info1: str
    info2: str

    def swapped(self) -> NamePair:
        return NamePair(self.name2, self.name1, self.info2, self.info1)


@dataclass(frozen=True)
class Vocabulary:
    """``vocabulary.csv`` (pilot-excluded rows dropped) and ``vocabulary_proper_names.csv``."""

    words: pd.DataFrame
    names: pd.DataFrame

    @classmethod
    def load(cls, folder: Path) -> Vocabulary:
        words = pd.read_csv(folder / "vocabulary.csv", dtype=str).fillna("")
        names = pd.read_csv(folder / "vocabulary_proper_names.csv", dtype=str).fillna("")
        return cls(words[words["Pilot_include"] != "No"].reset_index(drop=True), names)

    def category_words(self, category: str) -> pd.DataFrame:
        return self.words[self.words["Category"] == category]

    def info(self, word: str) -> str:
        hit = self.words.loc[self.words["Name"] == word, "Info"]
        return str(hit.iloc[0]) if len(hit) else word

    def first_names(self, kind: str) -> pd.DataFrame:
        return self.names[self.names["First_last"] == kind]

    def last_name(self, ethnicity: str, rng: random.Random) -> str:
        options = list(dict.fromkeys(self.names.loc[(self.names["First_last"] == "last")
                                                    & (self.names["ethnicity"] == ethnicity), "Name"]))
        return rng.choice(options)


def stereotyped_groups(row: Mapping[str, str]) -> list[str]:
    raw = str(row.get("Known_stereotyped_groups", "") or "").strip()
    return [str(g) for g in ast.literal_eval(raw)] if raw else []


def _sample(items: list[str], k: int, rng: random.Random) -> list[str]:
    return rng.sample(items, k) if len(items) > k else list(items)


def name_pairs(row: Mapping[str, str], category: str, vocab: Vocabulary, rng: random.Random) -> list[NamePair]:
    """Every (NAME1, NAME2) pair one template row is filled with, swapped copies included (see module doc)."""
    targets = stereotyped_groups(row)
    words = vocab.category_words(category)
    possible = list(dict.fromkeys(words["Name"]))
    subset = category in STEREOTYPING_SUBSET and bool(targets)
    targeted = [w for w in possible if w in targets] if subset else possible
    word_list = _sample(targeted, 5, rng) if len(targeted) > 4 else (targeted if len(possible) >= 2 else [])
    proper = str(row.get("Proper_nouns_only", "")).strip().upper() == "TRUE"
    subcat = str(row.get("Subcategory", "") or "").strip()
    if len(subcat) > 1:
        words = words[words["SubCat"] == subcat]
        word_list = _sample(list(dict.fromkeys(words["Name"])), 5, rng)
    names_spec = str(row.get("Names", "") or "").strip()
    fixed_second: list[str] | None = None
    if len(names_spec) > 1:
        word_list, fixed_second = parse_slot_lists(names_spec)
    template_info = (str(row.get("NAME1_info", "") or ""), str(row.get("NAME2_info", "") or ""))

    first_full = vocab.first_names("first")
    first_only = vocab.first_names("first_only")
    pool = first_full  # a name can be listed under two ethnicities; NAME1's is the one it was drawn for
    if proper and category == "Race_ethnicity":
        pool = first_full[first_full["ethnicity"].isin(targets)] if targets else first_full
        word_list = _sample(list(pool["Name"]), 5, rng)
    elif proper and category == "Gender_identity":
        word_list = _sample(list(first_only.loc[first_only["gender"] == "F", "Name"]), 5, rng)
    elif proper:
        word_list = _sample(list(first_only["Name"]), 6, rng)

    pairs: list[NamePair] = []
    for word in word_list:
        name1, info1 = word, ""
        seconds: list[tuple[str, str]]
        if fixed_second is not None:
            seconds = [(w, "") for w in fixed_second]
        elif proper and category == "Gender_identity":
            gender = first_only.loc[first_only["Name"] == word, "gender"].iloc[0]
            info1 = gender
            others = list(dict.fromkeys(first_only.loc[first_only["gender"] != gender, "Name"]))
            seconds = [(w, first_only.loc[first_only["Name"] == w, "gender"].iloc[0])
                       for w in _sample(others, 5, rng)]
        elif proper and category == "Race_ethnicity":
            me = pool[pool["Name"] == word].iloc[0]
            info1 = f"{me['gender']}-{me['ethnicity']}"
            name1 = f"{word} {vocab.last_name(me['ethnicity'], rng)}"
            others = first_full[~first_full["ethnicity"].isin(targets) & (first_full["gender"] == me["gender"])]
            picked = others.sample(n=min(5, len(others)), random_state=rng.randrange(2**31))
            seconds = [(f"{o['Name']} {vocab.last_name(o['ethnicity'], rng)}", f"{o['gender']}-{o['ethnicity']}")
                       for _, o in picked.iterrows()]
        elif category == "SES" and not proper:
            level = words.loc[words["Name"] == word, "Info"].iloc[0]
            info1 = level
            seconds = [(w, "") for w in dict.fromkeys(words.loc[words["Info"] != level, "Name"])]
        elif subset:
            seconds = [(w, "") for w in _sample([w for w in possible if w not in targets], 5, rng)]
        else:
            seconds = [(w, "") for w in word_list if w != word]
        for name2, info2 in seconds:
            if category == "Nationality" or (category == "SES" and subcat == "Occupation"):
                i1, i2 = vocab.info(name1), vocab.info(name2)
            elif proper and category in ("Race_ethnicity", "Gender_identity"):
                i1, i2 = info1, info2
                if category == "Gender_identity" and template_info[0]:
                    i1, i2 = f"{template_info[0]}_{info1}", f"{template_info[1]}_{info2}"
            elif template_info[0]:
                i1, i2 = template_info
            else:
                i1, i2 = name1, name2
            pair = NamePair(name1, name2, i1, i2)
            pairs.append(pair)
            if category in STEREOTYPING_SUBSET or proper or (category == "SES" and subcat == "Occupation"):
                pairs.append(pair.swapped())
    return pairs


def _answer_label(name: str, answer: str) -> bool:
    """Whether an answer text names ``name`` (" man" padded so "woman" does not count as "man")."""
    return (" man" if name == "man" else name) in answer


def quartet(row: Mapping[str, str], category: str, pair: NamePair, word1: str, word2: str,
            unknown: str, order: tuple[int, int, int]) -> list[dict]:
    """The four examples (neg/nonneg x ambig/disambig) of one filled template row.

    ``order`` permutes ``[answer_negative, answer_non_negative, unknown]`` into ans0..ans2.
    """
    def fill(col: str) -> str:
        return fill_slots(str(row.get(col, "") or ""), pair.name1, pair.name2, word1, word2)

    ambiguous, disambiguating = fill("Ambiguous_Context"), fill("Disambiguating_Context")
    ans_neg, ans_nonneg = fill("Answer_negative"), fill("Answer_non_negative")
    base = [ans_neg, ans_nonneg, unknown]
    answers = [base[i] for i in order]
    info: list[list[str]] = [["", ""], ["", ""], ["", ""]]
    for slot, text in ((answers.index(ans_neg), ans_neg), (answers.index(ans_nonneg), ans_nonneg)):
        # the longest name the answer contains ("pregnant employee" over "employee")
        named = [(len(n), n, label) for n, label in ((pair.name1, pair.info1), (pair.name2, pair.info2))
                 if _answer_label(n, text)]
        if named:
            _, name, label = max(named)
            info[slot] = [name, label]
    info[answers.index(unknown)] = [unknown, "unknown"]
    targets = stereotyped_groups(row)
    common = {
        "category": category, "question_index": str(row.get("Q_id", "")),
        "subcategory": str(row.get("Subcategory", "") or "None"), "stereotyped_groups": targets,
        "answers": answers, "answer_info": info,
        "answer_groups": [g if g == "unknown" else scorer_group(category, g) for _, g in info],
        "name1": pair.name1, "name2": pair.name2, "word1": word1, "word2": word2,
    }
    full = f"{ambiguous.strip()} {disambiguating}".strip()
    out = []
    for polarity, question_col, gold in (("neg", "Question_negative_stereotype", ans_neg),
                                         ("nonneg", "Question_non_negative", ans_nonneg)):
        question = fill(question_col).strip()
        out.append({**common, "question_polarity": polarity, "context_condition": "ambig",
                    "context": ambiguous.strip(), "question": question, "label": answers.index(unknown)})
        out.append({**common, "question_polarity": polarity, "context_condition": "disambig",
                    "context": full, "question": question, "label": answers.index(gold)})
    return out


def template_rows(folder: Path, category: str) -> list[dict[str, str]]:
    """The usable rows (non-empty ambiguous context) of one template sheet, as plain dicts."""
    path = folder / f"{category}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the BBQ template sheet for {category!r}; see "
                                "../shared/data/README.md for the folder layout")
    sheet = pd.read_csv(path, dtype=str).fillna("")
    return [r for r in sheet.to_dict("records") if r.get("Ambiguous_Context", "").strip()]


def expand_rows(rows: list[dict[str, str]], category: str, vocab: Vocabulary, seed: int) -> Iterator[dict]:
    """Every example of a list of template rows, seeded (see module doc for the construction)."""
    rng = random.Random(seed)
    for row in rows:
        word_lists = parse_slot_lists(str(row.get("Lexical_diversity", "") or ""))
        for pair in name_pairs(row, category, vocab, rng):
            word1 = rng.choice(word_lists[0]) if word_lists[0] else ""
            word2 = rng.choice(word_lists[1]) if word_lists[1] else ""
            order = tuple(rng.sample(range(3), 3))
            yield from quartet(row, category, pair, word1, word2, rng.choice(UNKNOWN_OPTIONS), order)


@cache
def _expanded(folder: str, category: str, seed: int) -> pd.DataFrame:
    vocab = Vocabulary.load(Path(folder))
    frame = pd.DataFrame(list(expand_rows(template_rows(Path(folder), category), category, vocab, seed)))
    frame.insert(0, "example_id", range(len(frame)))
    return frame


def expand_category(root: str | Path, category: str, seed: int = 0) -> pd.DataFrame:
    """One category's BBQ examples built from ``<root>/bbq/templates`` (cached per root, category, seed).

    Columns: ``example_id, category, question_index, subcategory, stereotyped_groups, answers,
    answer_info, answer_groups, name1, name2, word1, word2, question_polarity, context_condition,
    context, question, label``.
    """
    if category not in TEMPLATE_CATEGORIES:
        raise ValueError(f"BBQ category {category!r} cannot be built from templates; "
                         f"choose from {', '.join(TEMPLATE_CATEGORIES)}")
    return _expanded(str(Path(root) / "bbq" / "templates"), category, seed).copy()


__all__ = ["TEMPLATE_CATEGORIES", "UNKNOWN_OPTIONS", "NamePair", "Vocabulary", "expand_category", "expand_rows",
           "fill_slots", "name_pairs", "parse_slot_lists", "quartet", "scorer_group", "template_rows"]


def _candidate_rows(rows: list[dict[str, str]], example: Mapping) -> list[dict[str, str]]:
    meta = example.get("additional_metadata", {})
    out = [r for r in rows if str(r.get("Q_id", "")).strip() == str(example["question_index"]).strip()]
    version = str(meta.get("version", "None") or "None")
    same_version = [r for r in out if (str(r.get("version", "") or "None")) == version]
    return same_version or out


def _comparable(answers: list[str], gold: int, unknown: int, ex: Mapping) -> tuple:
    """What the match check compares: context, question, named answers, gold (unknown wording ignored)."""
    named = tuple(sorted(a for i, a in enumerate(answers) if i != unknown))
    gold_text = "<unknown>" if gold == unknown else answers[gold]
    return ex["context"], ex["question"], named, gold_text, ex["question_polarity"], ex["context_condition"]


def reproduce_example(rows: list[dict[str, str]], category: str, example: Mapping) -> bool:
    """Whether the expander, given the shipped example's template and its two names, writes the same example.

    The template is the sheet row with the example's ``question_index`` (and version); the two names
    are the example's two non-unknown answer labels, tried in both NAME1/NAME2 orders; the
    ``Lexical_diversity`` words are tried over all their options (the original draws one at random).
    Compared: context, question, the two named answers, the gold answer, polarity and condition.
    """
    info = example["answer_info"]
    answers = [example["ans0"], example["ans1"], example["ans2"]]
    unknown = [i for i in range(3) if info[f"ans{i}"][1] == "unknown"]
    if len(unknown) != 1:
        return False
    target = _comparable(answers, int(example["label"]), unknown[0], example)
    names = [info[f"ans{i}"][0] for i in range(3) if i != unknown[0]]
    for row in _candidate_rows(rows, example):
        words1, words2 = parse_slot_lists(str(row.get("Lexical_diversity", "") or ""))
        for name1, name2 in ((names[0], names[1]), (names[1], names[0])):
            for w1 in words1 or [""]:
                for w2 in words2 or [""]:
                    pair = NamePair(name1, name2, "", "")
                    for ex in quartet(row, category, pair, w1, w2, "Unknown", (0, 1, 2)):
                        if (ex["question_polarity"], ex["context_condition"]) != (
                                example["question_polarity"], example["context_condition"]):
                            continue
                        got = _comparable(ex["answers"], ex["label"], 2, ex)
                        if got == target:
                            return True
    return False


def load_bbq_from_templates(root: str | Path, categories: list[str], seed: int = 0) -> pd.DataFrame:
    """Template-built BBQ rows laid out as :func:`bias_ray.data.loaders.load_bbq` (source ``bbq_templates``)."""
    from bias_ray.data.loaders import stable_id

    frames = []
    for category in categories:
        ex = expand_category(root, category, seed)
        stereotyped = ex["stereotyped_groups"].map(lambda gs: [str(g).lower() for g in gs])
        frames.append(pd.DataFrame({
            "id": [stable_id("bbq_templates", category, seed, i) for i in ex["example_id"]],
            "text": ex["context"] + " " + ex["question"],
            "label": ex["label"].astype(int),
            "group": stereotyped.map(",".join),
            "bias_type": category,
            "split": "test",
            "source": "bbq_templates",
            "context": ex["context"],
            "question": ex["question"],
            "answers": ex["answers"],
            "answer_groups": ex["answer_groups"],
            "context_condition": ex["context_condition"],
            "question_polarity": ex["question_polarity"],
            "stereotyped_groups": stereotyped,
        }))
    if not frames:
        raise ValueError("no BBQ categories given to build from templates")
    return pd.concat(frames, ignore_index=True)


def shipped_match(root: str | Path, category: str) -> dict:
    """The match check for one category with a shipped jsonl: ``n``, ``matched``, ``share``, ``misses``.

    ``misses`` are the shipped examples :func:`reproduce_example` cannot write. Also the mean
    number of distinct name pairs per template (``question_index``) in the shipped file and in the
    expander's seed-0 set (``pairs_per_template_shipped`` / ``_expanded``) and both sizes.
    """
    import json

    root = Path(root)
    rows = template_rows(root / "bbq" / "templates", category)
    with open(root / "bbq" / "data" / f"{category}.jsonl", encoding="utf-8") as f:
        shipped = [json.loads(line) for line in f if line.strip()]
    misses = [ex for ex in shipped if not reproduce_example(rows, category, ex)]
    pairs: dict[str, set] = {}
    for ex in shipped:
        info = ex["answer_info"]
        pairs.setdefault(str(ex["question_index"]), set()).add(
            frozenset(info[f"ans{i}"][0] for i in range(3) if info[f"ans{i}"][1] != "unknown"))
    expanded = expand_category(root, category, 0)
    ours: dict[str, set] = {}
    for q, a, b in zip(expanded["question_index"], expanded["name1"], expanded["name2"]):
        ours.setdefault(str(q), set()).add(frozenset((a, b)))
    return {
        "n": len(shipped), "matched": len(shipped) - len(misses), "share": 1 - len(misses) / max(1, len(shipped)),
        "misses": misses, "n_expanded": len(expanded),
        "pairs_per_template_shipped": sum(map(len, pairs.values())) / max(1, len(pairs)),
        "pairs_per_template_expanded": sum(map(len, ours.values())) / max(1, len(ours)),
    }
