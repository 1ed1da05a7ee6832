"""Quality filters on generated rows: cleaning, length and refusal checks, exact duplicates.

Row filters give each row a ``drop_reason`` ("" = kept) so the manifest can count what was
dropped and why; duplicates are found over the whole job once it is complete, keeping the
smallest sample id of each text so the result does not depend on the order shards finished
(:func:`stream_duplicates` writes them to the store's ``duplicates.parquet``, for the finalize of
a generation job and for an import).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bias_ray.augmented.store import commit_file
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


def find_duplicates(rows: pd.DataFrame) -> pd.DataFrame:
    """``sample_id, duplicate_of`` for kept rows whose text repeats an earlier (smaller id) kept row."""
    kept = rows.loc[rows["drop_reason"] == "", ["sample_id", "text"]].sort_values(["text", "sample_id"])
    first = kept.groupby("text", sort=False)["sample_id"].transform("first")
    dup = kept[kept["sample_id"] != first]
    return pd.DataFrame({"sample_id": dup["sample_id"].to_numpy(), "duplicate_of": first[dup.index].to_numpy()})


def text_hashes(texts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """64-bit hashes of texts (pandas' SipHash): equal texts hash equal; a collision only costs a re-check."""
    return pd.util.hash_array(np.asarray(texts.to_numpy(zero_copy_only=False), dtype=object), categorize=False)


def stream_duplicates(parts: list[Path], hashes: list[np.ndarray], dest: Path,
                       rows_per_pass: int = 1_000_000) -> np.ndarray:
    """Write ``duplicates.parquet`` (atomically) from the shards; returns the duplicates' indices.

    ``hashes[k]`` are the text hashes of shard ``k``'s kept rows, in order. Only kept rows whose
    hash occurs more than once are candidates. They are read back in passes over the shards that
    hold some, each pass taking the candidates of one range of hash values (about
    ``rows_per_pass`` rows), and :func:`find_duplicates` compares their exact texts: the same rows
    are dropped as a whole-job comparison would drop, in memory bounded by a pass.
    """
    values, counts = np.unique(np.concatenate(hashes) if hashes else np.zeros(0, np.uint64), return_counts=True)
    repeated = values[counts > 1]
    del values, counts
    passes = max(1, -(-int(len(repeated) * 2) // rows_per_pass))  # >= 2 rows per repeated hash
    # hash ranges (sorted, exact bounds) holding about equal numbers of candidates
    edges = repeated[np.linspace(0, len(repeated) - 1, passes + 1).astype(np.int64)] if len(repeated) else []
    schema = pa.schema([("sample_id", pa.string()), ("duplicate_of", pa.string()), ("index", pa.int64())])
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    written: list[np.ndarray] = []
    with pq.ParquetWriter(tmp, schema) as writer:
        for k in range(passes if len(repeated) else 0):
            last = k == passes - 1
            wanted = repeated[(repeated >= edges[k]) & ((repeated <= edges[-1]) if last else (repeated < edges[k + 1]))]
            found = []
            for part, part_hashes in zip(parts, hashes):
                hit = np.isin(part_hashes, wanted)
                if hit.any():
                    table = pq.read_table(part, columns=["sample_id", "index", "text", "drop_reason"])
                    table = table.filter(pc.equal(table.column("drop_reason"), "")).filter(pa.array(hit))
                    found.append(table.to_pandas())
            if not found:
                continue
            rows = pd.concat(found, ignore_index=True)
            dups = find_duplicates(rows)
            dups["index"] = dups["sample_id"].map(rows.set_index("sample_id")["index"]).astype(np.int64)
            writer.write_table(pa.Table.from_pandas(dups[["sample_id", "duplicate_of", "index"]], schema=schema,
                                                    preserve_index=False))
            written.append(dups["index"].to_numpy())
    commit_file(tmp, dest)
    return np.concatenate(written) if written else np.zeros(0, dtype=np.int64)

