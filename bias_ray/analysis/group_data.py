"""Group data: how each group is represented in a set, and how far two representations diverge."""

from __future__ import annotations

import numpy as np


def representation(groups, names: list[str]) -> np.ndarray:
    """Share of rows per group in ``names`` order (rows of other groups are ignored)."""
    g = np.asarray(groups)
    counts = np.array([np.sum(g == n) for n in names], dtype=float)
    return counts / counts.sum() if counts.sum() else np.full(len(names), np.nan)


def kl_divergence(p, q, eps: float = 1e-6) -> float:
    """KL(p || q) in nats; both smoothed by ``eps`` so a group missing from q stays finite."""
    p, q = np.asarray(p, dtype=float) + eps, np.asarray(q, dtype=float) + eps
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def js_divergence(p, q) -> float:
    """Jensen-Shannon divergence in bits: symmetric, in [0, 1]."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def _kl(a, b):
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)
