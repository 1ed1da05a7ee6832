"""The stance classifier: logistic regression on MiniLM embeddings of the human-written ToxiGen statements.

It scores text toward a group as hateful (1) or neutral (0). The generation tasks use it for
toxicity of model outputs, and the misalignment analysis for the stance of real vs augmented
data, so both measure stance with the same instrument. Written in torch (no sklearn).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from bias_ray.measures.encoder import encode, resolve_encoder
from bias_ray.measures.metrics import accuracy, macro_f1
from bias_ray.runtime import cache_dir


@dataclass
class StanceClassifier:
    encoder: str
    weight: np.ndarray
    bias: float
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, texts: list[str], labels: np.ndarray, encoder: str, epochs: int = 300, l2: float = 1e-3,
            seed: int = 0) -> StanceClassifier:
        """Full-batch Adam on the L2-regularised logistic loss; deterministic for a given seed."""
        import torch

        labels = np.asarray(labels)
        if set(np.unique(labels)) - {0, 1} or len(np.unique(labels)) < 2:
            raise ValueError("the stance classifier needs labels 0 (neutral) and 1 (hate), both present")
        x = torch.from_numpy(encode(texts, encoder))
        y = torch.from_numpy(labels.astype(np.float32))
        g = torch.Generator().manual_seed(seed)
        w = (torch.randn(x.shape[1], generator=g) * 0.01).requires_grad_()
        b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=0.05)
        pos_weight = (y == 0).sum() / (y == 1).sum().clamp(min=1)  # balance the classes
        for _ in range(epochs):
            opt.zero_grad()
            logits = x @ w + b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
            (loss + l2 * (w * w).sum()).backward()
            opt.step()
        return cls(encoder, w.detach().numpy().copy(), float(b.detach()))

    def proba(self, texts: list[str]) -> np.ndarray:
        """P(hate) per text."""
        if len(texts) == 0:
            return np.zeros(0)
        return self.proba_from_embeddings(encode(list(texts), self.encoder))

    def proba_from_embeddings(self, emb: np.ndarray) -> np.ndarray:
        """P(hate) from embeddings made by :func:`encode` with this classifier's encoder."""
        return 1.0 / (1.0 + np.exp(-(emb @ self.weight + self.bias)))


FIT_VERSION = 1  # bump when the fit changes, so cached weights from older code are not reused


def _cache_key(data_root: str, encoder: str, epochs: int, l2: float, test_fraction: float) -> str:
    """Changes whenever the training data, the encoder weights or the settings change."""
    parts = [str(FIT_VERSION), encoder, str(epochs), str(l2), str(test_fraction)]
    for f in sorted((Path(data_root) / "toxigen" / "prompts").glob("*_1k.txt")) + [Path(encoder) / "config.json"]:
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


@cache
def toxigen_classifier(data_root: str, encoder: str, epochs: int = 300, l2: float = 1e-3,
                       test_fraction: float = 0.3) -> StanceClassifier:
    """Train on the ToxiGen train split (or load the cached fit); held-out accuracy, macro-F1 in ``.metrics``."""
    from bias_ray.data.loaders import load_toxigen
    from bias_ray.measures.encoder import load_encoder

    encoder = resolve_encoder(encoder)
    load_encoder(encoder)  # a clear error for a missing encoder before anything else
    path = cache_dir() / f"stance-{_cache_key(data_root, encoder, epochs, l2, test_fraction)}.npz"
    if path.is_file():
        saved = np.load(path)
        return StanceClassifier(encoder, saved["weight"], float(saved["bias"]), json.loads(str(saved["metrics"])))
    rows = load_toxigen(data_root, test_fraction=test_fraction)  # the sweep's split: held out means held out
    train, test = rows[rows["split"] == "train"], rows[rows["split"] == "test"]
    clf = StanceClassifier.fit(train["text"].tolist(), train["label"].to_numpy(), encoder, epochs, l2)
    pred = (clf.proba(test["text"].tolist()) > 0.5).astype(int)
    clf.metrics = {
        "test_accuracy": accuracy(test["label"].to_numpy(), pred),
        "test_macro_f1": macro_f1(test["label"].to_numpy(), pred),
        "train_rows": float(len(train)),
        "test_rows": float(len(test)),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.npz")
        np.savez(tmp, weight=clf.weight, bias=clf.bias, metrics=json.dumps(clf.metrics))
        tmp.replace(path)
    except OSError:  # a read-only home only costs a refit next time
        pass
    return clf
