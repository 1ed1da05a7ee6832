"""Mitigations of bias inheritance: a registry of small classes with one interface.

Adding a mitigation is one file in this folder: subclass :class:`Mitigation`, decorate it
with ``@MITIGATIONS.register("name")`` and import it below.
"""

from bias_ray.registry import MITIGATIONS
from bias_ray.train.mitigations import loss, mask, none, token  # noqa: F401  (registers)
from bias_ray.train.mitigations.base import Mitigation, TrialContext, validate_params

__all__ = ["MITIGATIONS", "Mitigation", "TrialContext", "validate_params"]
