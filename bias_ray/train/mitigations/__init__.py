"""Mitigations of bias inheritance: a registry of small classes with one interface.

Adding a mitigation is one file in this folder: subclass :class:`Mitigation`, decorate it
with ``@MITIGATIONS.register("name")`` and import it below.
"""

from bias_ray.registry import Registry
from bias_ray.train.mitigations.base import Mitigation

MITIGATIONS: Registry[type[Mitigation]] = Registry("mitigation")

from bias_ray.train.mitigations import none, token  # noqa: E402,F401  (registers)

__all__ = ["MITIGATIONS", "Mitigation"]
