"""No mitigation: the baseline every other mitigation is compared with."""

from bias_ray.registry import MITIGATIONS
from bias_ray.train.mitigations.base import Mitigation


@MITIGATIONS.register("none")
class NoMitigation(Mitigation):
    """Train on the mix as it is: loss = CE(f(x), y)."""

    name = "none"

    @classmethod
    def same_as_none_without_augmented_rows(cls, params) -> bool:
        return True
