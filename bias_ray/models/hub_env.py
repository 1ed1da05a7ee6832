"""The user's Hugging Face environment, read at call time: offline mode, the hub cache, and the fix to name.

Apart from :mod:`.hub` so that :mod:`.gguf` (which :mod:`.hub` dispatches to) can use it without an import circle.
Offline mode is the user's own setting; nothing here sets it.
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """True when the user's environment forbids the hub (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` = 1)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in OFFLINE_VARS)


def hub_cache_dir() -> Path:
    """The hub cache that huggingface_hub would use with this environment."""
    if env := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env).expanduser()
    if home := os.environ.get("HF_HOME"):
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def offline_fix(repo_id: str, filename: str | None = None) -> str:
    """Why ``repo_id`` (or one ``filename`` of it) cannot be had offline, and the ways out."""
    what = f"{repo_id} {filename}" if filename else repo_id
    home = os.environ.get("HF_HOME")
    where = f"HF_HOME={home}" if home else "HF_HOME unset"
    return (f"{repo_id} is not in the local Hugging Face cache {hub_cache_dir()} ({where}) and offline mode "
            f"({'/'.join(v for v in OFFLINE_VARS if os.environ.get(v))}=1) forbids downloading it. Fix: download it "
            f"into that cache first (`hf download {what}` with the same HF_HOME, on a machine with hub access), "
            "point HF_HOME at a cache that holds it, give a local folder instead, or unset HF_HUB_OFFLINE")
