"""The misalignment analysis: how augmented data differs from real data in values, group data and distribution."""

from bias_ray.analysis.run import analyze, compare_sets

__all__ = ["analyze", "compare_sets"]
