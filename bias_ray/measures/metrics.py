"""Classification and group-fairness metrics, as a registry of small functions.

Every metric has one signature, ``(y_true, y_pred, groups) -> float``, so adding one is one
function. Fairness gaps are the largest difference across groups (0 is perfectly fair); a
group with no row of the needed kind (no negatives for a false-positive rate) is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bias_ray.catalog import task_listing
from bias_ray.registry import Registry

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], float]
METRICS: Registry[Metric] = Registry("metric")

# What "better" means for a metric, and the range its values live in, declared once where the metric is
# (a trial-level metric: :func:`metric`; a downstream task's: its resources/tasks.yaml entry, ``better``
# and ``bounds``). The report reads both through :func:`metric_direction` and :func:`metric_bounds`.
#   higher: larger is better (accuracy)        lower: smaller is better (a false-positive rate)
#   zero:   closer to 0 is better (a gap)      half:  closer to 0.5 is better (a stereotype preference)
# Bounds: the report cuts a 95% interval at them (a t-interval over 3 seeds of a share can reach below 0 or
# above 1) and says so. Rates, shares, accuracies, F1 and max - min gaps of rates lie in [0, 1]; signed
# scores (BBQ's s_dis and s_amb, a difference of two rates) in [-1, 1]; None = no natural range.
DIRECTIONS = ("higher", "lower", "zero", "half")
UNIT = (0.0, 1.0)
SIGNED_UNIT = (-1.0, 1.0)
METRIC_DIRECTIONS: dict[str, str] = {}
METRIC_BOUNDS: dict[str, tuple[float, float] | None] = {}


def _declared(registry: Registry, name: str, better: str, bounds: tuple[float, float] | None) -> Callable:
    """A decorator registering ``name`` in ``registry`` with its direction and range."""
    if better not in DIRECTIONS:
        raise ValueError(f"metric {name!r}: better={better!r}; allowed: {', '.join(DIRECTIONS)}")
    register = registry.register(name)

    def decorator(fn):
        METRIC_DIRECTIONS[name], METRIC_BOUNDS[name] = better, bounds
        return register(fn)
    return decorator


def metric(name: str, better: str, bounds: tuple[float, float] | None = UNIT) -> Callable[[Metric], Metric]:
    """Register a trial-level metric with what is better for it and its range (one place for all three)."""
    return _declared(METRICS, name, better, bounds)


def _arrays(y_true: Sequence, y_pred: Sequence, groups: Sequence | None = None):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.shape} rows but y_pred has {y_pred.shape}")
    g = np.asarray(groups) if groups is not None else np.zeros(len(y_true), dtype=object)
    return y_true, y_pred, g


@metric("accuracy", better="higher")
def accuracy(y_true, y_pred, groups=None) -> float:
    y_true, y_pred, _ = _arrays(y_true, y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


@metric("macro_f1", better="higher")
def macro_f1(y_true, y_pred, groups=None) -> float:
    """Unweighted mean of per-class F1 over the classes present in y_true or y_pred."""
    y_true, y_pred, _ = _arrays(y_true, y_pred)
    scores = []
    for c in np.union1d(y_true, y_pred):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def rank_auc(higher: np.ndarray, lower: np.ndarray) -> float:
    """P(x > y) + P(x = y) / 2 for x from ``higher``, y from ``lower`` (Mann-Whitney U / (n_x n_y)); NaN if one is
    empty."""
    from scipy.stats import rankdata

    if not len(higher) or not len(lower):
        return float("nan")
    ranks = rankdata(np.concatenate([higher, lower]))
    u = ranks[: len(higher)].sum() - len(higher) * (len(higher) + 1) / 2
    return float(u / (len(higher) * len(lower)))


def per_group_rate(y_true, y_pred, groups, kind: str) -> dict[str, float]:
    """Per-group false-positive, false-negative or positive-prediction rate (positive class = 1)."""
    y_true, y_pred, g = _arrays(y_true, y_pred, groups)
    out = {}
    for name in np.unique(g):
        m = g == name
        t, p = y_true[m], y_pred[m]
        if kind == "fpr":
            neg = t == 0
            if neg.any():
                out[str(name)] = float(np.mean(p[neg] == 1))
        elif kind == "fnr":
            pos = t == 1
            if pos.any():
                out[str(name)] = float(np.mean(p[pos] == 0))
        elif kind == "ppr":
            out[str(name)] = float(np.mean(p == 1))
        else:
            raise ValueError(f"unknown rate {kind!r}; allowed: fpr, fnr, ppr")
    return out


def _gap(rates: dict[str, float]) -> float:
    return float(max(rates.values()) - min(rates.values())) if len(rates) >= 2 else 0.0


@metric("fpr_gap", better="zero")
def fpr_gap(y_true, y_pred, groups) -> float:
    """Largest difference across groups in false-positive rate (neutral text flagged as hate)."""
    return _gap(per_group_rate(y_true, y_pred, groups, "fpr"))


@metric("fnr_gap", better="zero")
def fnr_gap(y_true, y_pred, groups) -> float:
    """Largest difference across groups in false-negative rate (hate text missed)."""
    return _gap(per_group_rate(y_true, y_pred, groups, "fnr"))


@metric("ppr_gap", better="zero")
def ppr_gap(y_true, y_pred, groups) -> float:
    """Largest difference across groups in positive-prediction rate (demographic parity gap)."""
    return _gap(per_group_rate(y_true, y_pred, groups, "ppr"))


@metric("accuracy_gap", better="zero")
def accuracy_gap(y_true, y_pred, groups) -> float:
    """Largest difference across groups in accuracy, ``max_g acc_g - min_g acc_g`` (Bias in Bios: per gender)."""
    return _gap(per_group_accuracy(y_true, y_pred, groups))


def per_group_accuracy(y_true, y_pred, groups) -> dict[str, float]:
    """Accuracy within each group, ``acc_g = mean(y_pred == y_true | group g)``."""
    y_true, y_pred, g = _arrays(y_true, y_pred, groups)
    return {str(name): float(np.mean(y_true[g == name] == y_pred[g == name])) for name in np.unique(g)}


# A binary task (label 1 = the positive class, e.g. hate) gets the rate gaps; a task of named classes
# (data.labels, e.g. Bias in Bios' occupations) has no positive class: its gap is the accuracy gap.
BINARY_METRICS = ("accuracy", "macro_f1", "fpr_gap", "fnr_gap", "ppr_gap")
MULTICLASS_METRICS = ("accuracy", "macro_f1", "accuracy_gap")


def compute_all(y_true, y_pred, groups, names: Sequence[str] = BINARY_METRICS) -> dict[str, float]:
    return {n: METRICS.get(n)(y_true, y_pred, groups) for n in names}


# Score metrics read the class probabilities ``p`` (``[N, C]``, rows summing to 1) instead of the labels. A
# student early in training predicts one class for every row, so every label metric of every trial ties
# (macro-F1 0.371 in all 16 cells of the study's gender grid at their first two reports, 8 of 32 steps) while
# the probabilities already rank rows and trials: an early-stopping scheduler can compare trials on these from
# the first report (scheduler.metric: roc_auc or log_loss; docs/early_stopping.md, "Stopping on roc_auc").
ScoreMetric = Callable[[np.ndarray, np.ndarray], float]
SCORE_METRICS: Registry[ScoreMetric] = Registry("score metric")


def score_metric(name: str, better: str, bounds: tuple[float, float] | None = UNIT
                 ) -> Callable[[ScoreMetric], ScoreMetric]:
    """Register a trial-level metric of ``(y_true, p)`` with its direction and range, as :func:`metric` does."""
    return _declared(SCORE_METRICS, name, better, bounds)


def _scored(y_true: Sequence, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, p = np.asarray(y_true), np.asarray(p, dtype=float)
    if p.ndim != 2 or len(p) != len(y_true):
        raise ValueError(f"p must be [rows, classes] with one row per label; got {p.shape} for {len(y_true)} labels")
    return y_true, p


@score_metric("roc_auc", better="higher")
def roc_auc(y_true, p) -> float:
    """ROC AUC of ``P(label 1)`` (a 0/1 task): ``P(s_i > s_j) + P(s_i = s_j) / 2`` over a positive row ``i`` and
    a negative row ``j``, ``s = p[:, 1]`` (:func:`rank_auc`); 0.5 = no ranking, NaN without both labels."""
    y_true, p = _scored(y_true, p)
    s = p[:, 1]
    return rank_auc(s[y_true == 1], s[y_true == 0])


@score_metric("log_loss", better="lower", bounds=None)
def log_loss(y_true, p) -> float:
    """Mean cross-entropy of the true class, ``-1/N sum_i log max(p[i, y_i], 1e-12)``: the held-out loss (0 is a
    certain and right classifier; ``log C`` a uniform one). NaN for a label outside ``0..C-1``."""
    y_true, p = _scored(y_true, p)
    if not len(y_true):
        return float("nan")
    try:
        y = y_true.astype(np.int64)
    except (TypeError, ValueError):
        return float("nan")
    if (y != y_true).any() or (y < 0).any() or (y >= p.shape[1]).any():
        return float("nan")
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))


BINARY_SCORE_METRICS = ("roc_auc", "log_loss")
MULTICLASS_SCORE_METRICS = ("log_loss",)


def compute_scores(y_true, p, names: Sequence[str] = BINARY_SCORE_METRICS) -> dict[str, float]:
    return {n: SCORE_METRICS.get(n)(y_true, p) for n in names}


def metric_direction(column: str, listing: dict | None = None) -> str | None:
    """What is better for a results column, or None when nothing declares it.

    ``task/<task>/<metric>`` is looked up in the task listing (``resources/tasks.yaml``, or ``listing``);
    ``bias_type/<metric>`` and ``best_<metric>`` are the trial-level metric they name.
    """
    if column.startswith("task/"):
        _, task, metric = column.split("/", 2)
        if listing is None:
            listing = task_listing()
        entry = listing.get("tasks", {}).get(task) or {}
        direction = (entry.get("better") or {}).get(metric)
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"task {task!r} declares better: {{{metric}: {direction!r}}}; "
                             f"allowed: {', '.join(DIRECTIONS)}")
        return direction
    name = column.removeprefix("bias_type/").removeprefix("best_")
    return METRIC_DIRECTIONS.get(name)


def shortfall(value, direction: str):
    """How far a value is from the metric's best, so that smaller is always better.

    higher: -v; lower: v; zero: |v|; half: |v - 0.5|. A change's improvement is
    ``shortfall(before) - shortfall(after)`` (positive = better).
    """
    v = np.asarray(value, dtype=float)
    if direction == "higher":
        return -v
    if direction == "lower":
        return v
    if direction == "zero":
        return np.abs(v)
    if direction == "half":
        return np.abs(v - 0.5)
    raise ValueError(f"unknown direction {direction!r}; allowed: {', '.join(DIRECTIONS)}")


def metric_bounds(column: str) -> tuple[float, float] | None:
    """The ``(low, high)`` range of a results column's values, or None when it has none (or none is listed).

    ``task/<task>/<metric>`` is looked up in the task's ``bounds`` (``resources/tasks.yaml``);
    ``bias_type/<metric>`` and ``best_<metric>`` are the trial-level metric they name.
    """
    if column.startswith("task/"):
        _, task, name = column.split("/", 2)
        bounds = ((task_listing()["tasks"].get(task) or {}).get("bounds") or {}).get(name)
        return (float(bounds[0]), float(bounds[1])) if bounds else None
    return METRIC_BOUNDS.get(column.removeprefix("bias_type/").removeprefix("best_"))
