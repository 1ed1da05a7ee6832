"""Real benchmark data (BBQ, CrowS-Pairs, ToxiGen, HateCheck) loaded into one schema."""

from bias_ray.data.loaders import SCHEMA, load_bbq, load_crows_pairs, load_hatecheck, load_toxigen, stable_id

__all__ = ["SCHEMA", "load_bbq", "load_crows_pairs", "load_hatecheck", "load_toxigen", "stable_id"]
