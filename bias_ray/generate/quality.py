"""Quality filters on generated rows: cleaning, length and refusal checks.

Row filters give each row a ``drop_reason`` ("" = kept) so the manifest can count what was
dropped and why. Exact duplicates are found over the whole job once it is complete, by the
store's finalize (:mod:`bias_ray.augmented.finalize`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bias_ray.spec import QualitySpec

# the characters ``str.strip()`` removes (``str.isspace``), for the same cleaning on Arrow arrays
PY_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                 "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
DROP_REASONS = ["", "empty", "too_short", "too_long", "refusal"]  # "" = kept; the others in the order checked


def clean_generation(text: str) -> str:
    """Keep the first generated statement: up to the first newline, stripped of list markers."""
    first = str(text).strip().split("\n", 1)[0]
    return first.strip().lstrip("-").strip()


def drop_reason(text: str, quality: QualitySpec) -> str:
    """Why a cleaned text fails the row filters, or "" when it passes."""
    if not text.strip():
        return "empty"
    if len(text) < quality.min_chars:
        return "too_short"
    if len(text) > quality.max_chars:
        return "too_long"
    lowered = text.lower()
    if any(p.lower() in lowered for p in quality.refusal_patterns):
        return "refusal"
    return ""


def clean_generations(texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """:func:`clean_generation` of every text (nulls read as ""), on the Arrow array: same results."""
    texts = pc.fill_null(texts.cast(pa.string()), "")
    first = pc.list_element(pc.split_pattern(pc.utf8_trim(texts, PY_WHITESPACE), "\n", max_splits=1), 0)
    return pc.utf8_trim(pc.utf8_ltrim(pc.utf8_trim(first, PY_WHITESPACE), "-"), PY_WHITESPACE)


def _re2_literal(text: str) -> str:
    """``text`` as an RE2 pattern matching exactly it (ASCII: letters, digits and spaces as they are)."""
    return "".join(c if c.isalnum() or c == " " else f"\\x{{{ord(c):02x}}}" for c in text)


def drop_reasons(texts: pa.Array | pa.ChunkedArray, quality: QualitySpec) -> pa.Array:
    """:func:`drop_reason` of every text, on the Arrow array: same results.

    Lengths count code points as ``len`` does; refusal patterns are matched on ASCII-lowered text
    for ASCII rows (where ``str.lower`` agrees) and with ``str.lower`` itself for the others.
    """
    texts = pc.fill_null(texts.cast(pa.string()), "")
    chars = np.asarray(pc.utf8_length(texts))
    empty = np.asarray(pc.equal(pc.utf8_trim(texts, PY_WHITESPACE), ""))
    refusal = np.zeros(len(texts), dtype=bool)
    patterns = [p.lower() for p in quality.refusal_patterns]
    if patterns:
        ascii_rows = np.asarray(pc.string_is_ascii(texts))
        # one scan for all patterns (an RE2 alternation of literals); a non-ASCII pattern cannot occur
        # in a lowered ASCII text
        literals = [_re2_literal(p) for p in patterns if p.isascii()]
        if literals:
            # utf8_lower, not ascii_lower: pyarrow 26's ascii_lower keeps the input's offsets, so an
            # array whose offsets do not start at 0 (a slice of a pandas string column) comes out
            # invalid: wrong matches, or a crash. On ASCII rows the two agree.
            refusal |= np.asarray(pc.match_substring_regex(pc.utf8_lower(texts), "|".join(literals))) & ascii_rows
        others = np.flatnonzero(~ascii_rows)
        for row, text in zip(others.tolist(), texts.take(pa.array(others)).to_pylist()):
            refusal[row] = any(p in text.lower() for p in patterns)
    code = np.zeros(len(texts), dtype=np.int8)  # the first failed check wins: set in reverse order
    code[refusal] = 4
    code[chars > quality.max_chars] = 3
    code[chars < quality.min_chars] = 2
    code[empty] = 1
    return pa.array(DROP_REASONS, pa.string()).take(pa.array(code))
