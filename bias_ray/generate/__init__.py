"""Generation: seed data + prompt templates per bias type -> augmented data (Ray Data).

The stage's public surface for other stages: :func:`generate` runs the job,
:func:`measure_generation` adds what the generator wrote to its manifest, :func:`import_augmented`
lays out rows made elsewhere (a frame or files, streamed), :func:`generate_texts` answers prompts
made elsewhere (the analysis' neutral probes). The data they write is read through
:mod:`bias_ray.augmented`, not through this stage.
They are imported on first use, so ``import bias_ray.generate`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["generate", "generate_texts", "import_augmented", "measure_generation"]


def __getattr__(name: str) -> Any:
    if name == "import_augmented":
        from bias_ray.generate import imported

        return imported.import_augmented
    if name == "generate_texts":
        from bias_ray.generate import texts

        return texts.generate_texts
    if name in __all__:
        from bias_ray.generate import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
