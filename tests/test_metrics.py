"""Group-fairness metrics of measures.metrics, by hand on a small fixed prediction set."""

from __future__ import annotations

import pytest

from bias_ray.measures.metrics import METRICS, compute_all, per_group_rate

Y = [0, 0, 1, 1, 0, 0, 1, 1]
P = [1, 0, 1, 1, 0, 0, 0, 1]
G = ["a", "a", "a", "a", "b", "b", "b", "b"]


def test_rates_and_gaps_by_hand():
    assert per_group_rate(Y, P, G, "fpr") == {"a": 0.5, "b": 0.0}
    assert per_group_rate(Y, P, G, "fnr") == {"a": 0.0, "b": 0.5}
    assert per_group_rate(Y, P, G, "ppr") == {"a": 0.75, "b": 0.25}
    out = compute_all(Y, P, G)
    assert out["fpr_gap"] == 0.5 and out["fnr_gap"] == 0.5 and out["ppr_gap"] == 0.5
    assert out["accuracy"] == pytest.approx(6 / 8)
    # class 0: tp 3, fp 1, fn 1 -> 6/8; class 1: tp 3, fp 1, fn 1 -> 6/8
    assert out["macro_f1"] == pytest.approx(0.75)


def test_group_without_negatives_is_left_out_and_bad_input_fails():
    assert per_group_rate([1, 1, 0], [1, 0, 1], ["a", "a", "b"], "fpr") == {"b": 1.0}
    assert METRICS.get("fpr_gap")([1, 1, 0], [1, 0, 1], ["a", "a", "b"]) == 0.0  # one group: no gap
    with pytest.raises(ValueError, match="rows"):
        compute_all([0, 1], [0], ["a", "a"])
    with pytest.raises(ValueError, match="unknown rate"):
        per_group_rate(Y, P, G, "tpr")


def test_score_metrics_against_scikit_learn_and_their_edges():
    import numpy as np
    from sklearn.metrics import log_loss, roc_auc_score

    from bias_ray.measures.metrics import compute_scores, metric_direction

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1).round(2)  # rounded: ties, counted as half
    p = np.stack([1 - s, s], axis=1)
    out = compute_scores(y, p)
    assert out["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert out["log_loss"] == pytest.approx(log_loss(y, np.clip(p, 1e-12, 1)), rel=1e-9)
    three = rng.dirichlet([1, 1, 1], 50)
    labels = rng.integers(0, 3, 50)
    assert compute_scores(labels, three, ["log_loss"])["log_loss"] == pytest.approx(log_loss(labels, three,
                                                                                            labels=[0, 1, 2]))
    assert np.isnan(compute_scores([1, 1], [[0.2, 0.8], [0.4, 0.6]])["roc_auc"])  # one class: no ranking
    assert np.isnan(compute_scores([0, 2], [[0.2, 0.8], [0.4, 0.6]])["log_loss"])  # label outside the classes
    assert compute_scores([0], [[1.0, 0.0]])["log_loss"] == 0.0
    assert metric_direction("roc_auc") == "higher" and metric_direction("log_loss") == "lower"
    with pytest.raises(ValueError, match="one row per label"):
        compute_scores([0, 1], [[0.5, 0.5]])
