"""Data distribution: distances between two sets' sentence embeddings, and length / vocabulary statistics."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from bias_ray.analysis.group_data import js_divergence

WORD = re.compile(r"[a-z0-9']+")


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def _pooled_kernel(x: np.ndarray, y: np.ndarray, bandwidth: float | None) -> np.ndarray:
    """The RBF kernel over ``x`` then ``y``; bandwidth by the median heuristic on the pooled set."""
    pooled = np.concatenate([x, y])
    d = _sq_dists(pooled, pooled)  # once: for the bandwidth and for all three kernel blocks
    if bandwidth is None:
        bandwidth = float(np.sqrt(np.median(d[np.triu_indices(len(pooled), 1)]) / 2)) or 1.0
    return np.exp(-d / (2 * bandwidth**2))


def _mmd_from_kernel(k: np.ndarray, n: int) -> float:
    """Unbiased MMD^2 of the first ``n`` rows of the pooled kernel ``k`` against the rest."""
    m = len(k) - n
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def mmd_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD with an RBF kernel; bandwidth by the median heuristic on the pooled set."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    return _mmd_from_kernel(_pooled_kernel(x, y, bandwidth), len(x))


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int = 500, seed: int = 0,
                         bandwidth: float | None = None) -> tuple[float, float]:
    """MMD^2 and its permutation p-value: could ``x`` and ``y`` come from one distribution?

    The pooled rows are split at random into sets of the two sizes ``B`` times (the kernel and its
    bandwidth fixed, computed once); ``p = (1 + #{b : MMD^2_b >= MMD^2}) / (1 + B)``, which is exact
    (never 0) for a permutation test.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        return float("nan"), float("nan")
    k = _pooled_kernel(x, y, bandwidth)
    observed = _mmd_from_kernel(k, len(x))
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(permutations):
        order = rng.permutation(len(k))
        exceed += _mmd_from_kernel(k[np.ix_(order, order)], len(x)) >= observed
    return observed, (1 + exceed) / (1 + permutations)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x^1/2 S_y S_x^1/2)^1/2), the FID formula on embeddings."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    mu = x.mean(0) - y.mean(0)
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = _sqrtm_psd(sx)
    cross = _sqrtm_psd(root @ sy @ root)
    return float(mu @ mu + np.trace(sx) + np.trace(sy) - 2 * np.trace(cross))


def words(text: str) -> list[str]:
    return WORD.findall(str(text).lower())


def text_stats(texts) -> dict[str, float]:
    """Length in words, vocabulary size and type-token ratio of a set of texts."""
    toks = [words(t) for t in texts]
    lengths = np.array([len(t) for t in toks], dtype=float)
    flat = [w for t in toks for w in t]
    return {
        "rows": float(len(toks)),
        "mean_words": float(lengths.mean()) if len(lengths) else float("nan"),
        "median_words": float(np.median(lengths)) if len(lengths) else float("nan"),
        "vocab_size": float(len(set(flat))),
        "type_token_ratio": len(set(flat)) / len(flat) if flat else float("nan"),
    }


def vocabulary_divergence(texts_a, texts_b) -> dict[str, float]:
    """Jaccard overlap of the two vocabularies, and JS divergence of their unigram distributions."""
    ca, cb = Counter(w for t in texts_a for w in words(t)), Counter(w for t in texts_b for w in words(t))
    vocab = sorted(set(ca) | set(cb))
    if not vocab:
        return {"vocab_jaccard": float("nan"), "unigram_js": float("nan")}
    pa, pb = np.array([ca[w] for w in vocab], dtype=float), np.array([cb[w] for w in vocab], dtype=float)
    return {
        "vocab_jaccard": len(set(ca) & set(cb)) / len(vocab),
        "unigram_js": js_divergence(pa, pb) if pa.sum() and pb.sum() else float("nan"),
    }
