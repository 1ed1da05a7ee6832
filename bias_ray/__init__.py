"""bias-ray: distributed sweeps on Ray for studying and mitigating bias inheritance."""

__version__ = "0.1.0"
