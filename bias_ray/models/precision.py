"""Precision: ``models.dtype`` for loading weights, and the mixed-precision rule of the trials.

``models.dtype``: ``auto`` (the checkpoint's own dtype, as transformers and vLLM read it; float32
when the checkpoint names none), ``bfloat16``, ``float16`` or ``float32``. It applies to the
generator (transformers engine and vLLM) and to the student.

Training in half precision (the choice, and why): the frozen base weights are loaded in the
half dtype (an 8B model: 16 GB instead of 32 GB); every *trainable* parameter (LoRA adapters,
``modules_to_save`` such as a classification head or resized embeddings) is kept in float32, the
optimizer's master copy; forward passes run under ``torch.autocast`` in the half dtype. Updates
of ~1e-4 relative size would vanish in bfloat16's 8-bit mantissa, so master weights must be
float32; autocast lets float32 adapters and half base weights meet in one matmul. float16 also
scales the loss (``torch.amp.GradScaler``) so small gradients do not underflow.
"""

from __future__ import annotations

import contextlib
from typing import Any

DTYPES = ("auto", "bfloat16", "float16", "float32")
HALF = ("bfloat16", "float16")


def load_dtype(name: str) -> Any:
    """The ``dtype`` argument for ``from_pretrained``: a torch dtype, or ``"auto"``."""
    import torch

    if name == "auto":
        return "auto"
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; allowed: {', '.join(DTYPES)}")
    return getattr(torch, name)


def dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` -> ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


def autocast(device: str, dtype: Any):
    """``torch.autocast`` in ``dtype`` on ``device``'s type when it is a half dtype, else a no-op context."""
    import torch

    if dtype_name(dtype) not in HALF:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def trainable_to_float32(model: Any) -> int:
    """Cast every trainable parameter to float32 (the master weights); returns how many were cast."""
    import torch

    cast = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
            cast += 1
    return cast


def grad_scaler(device: str, dtype: Any):
    """A loss scaler for float16 training (enabled only then)."""
    import torch

    return torch.amp.GradScaler(device.split(":")[0], enabled=dtype_name(dtype) == "float16")
