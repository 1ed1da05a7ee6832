"""Built-in resources every layer may read (bias types), with no import of the spec or any stage.

The data loaders and the spec both need the bias-type catalog; keeping it here lets the spec
import the data layer's checks without an import circle.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
RESOURCES = PACKAGE_DIR / "resources"


@cache
def bias_type_catalog() -> dict[str, dict[str, Any]]:
    """The built-in bias types (data in ``resources/bias_types.yaml``)."""
    with open(RESOURCES / "bias_types.yaml") as f:
        return yaml.safe_load(f)["bias_types"]
