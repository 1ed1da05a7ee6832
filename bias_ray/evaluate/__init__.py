"""Evaluation: task metrics and group-fairness metrics on real held-out data."""
