"""What a student's checkpoint can do before any weight is loaded: does it have a language-model head?

Likelihood and generation tasks (CrowS-Pairs, BBQ, recruitment, stories) score the student as a causal
LM. A sequence-classification student is turned into one by copying its trained body into the
checkpoint's own causal LM (``measures/lm.py``); an encoder such as MiniLM has none, and
``AutoModelForCausalLM`` would load it with a *randomly initialised* head and score noise without
an error. So the run refuses such a pairing before it starts (``train.sweep.check_student_tasks``).
"""

from __future__ import annotations

import json
from pathlib import Path

LM_ARCHITECTURE_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def has_lm_head(reference: str) -> bool | None:
    """True/False from the checkpoint's ``config.json`` ``architectures``; None when that is not on this machine.

    A GGUF file is always a causal LM (transformers loads GGUF only into ``*ForCausalLM``).
    """
    from bias_ray.models.gguf import is_gguf
    from bias_ray.models.hub import cached_config, source_kind

    if is_gguf(reference):
        return True
    config = Path(reference).expanduser() / "config.json" if source_kind(reference) == "folder" else \
        cached_config(reference)
    if config is None or not config.is_file():
        return None
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return None
    if not architectures:
        return None
    return any(a.endswith(LM_ARCHITECTURE_SUFFIXES) for a in architectures)
