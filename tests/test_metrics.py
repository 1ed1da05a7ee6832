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
