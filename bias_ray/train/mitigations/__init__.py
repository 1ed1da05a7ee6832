"""Mitigations of bias inheritance: a registry of small classes with one interface.

Adding a mitigation is one file in this folder: subclass :class:`Mitigation` and decorate it
with ``@MITIGATIONS.register("name")``; the package imports every module of the folder.
"""

from bias_ray.registry import MITIGATIONS, import_plugins
from bias_ray.train.mitigations.base import Mitigation, TrialContext, validate_params

import_plugins(__name__)

__all__ = ["MITIGATIONS", "Mitigation", "TrialContext", "validate_params"]
