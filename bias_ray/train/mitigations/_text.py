"""Tokenizing rows the way the trainable does, with character offsets for lexicon matching."""

from __future__ import annotations

from typing import Any


def encode(tokenizer: Any, texts: list[str], max_length: int, offsets: bool = False) -> dict[str, Any]:
    """The trainable's one tokenization rule (padding to the longest, truncation at ``max_length``)."""
    return tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_offsets_mapping=offsets,
    )
