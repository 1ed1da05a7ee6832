"""What names a model's content, wherever it lies: the generator's part of every sample id.

A sample id hashes the generation settings, the generator among them, and the id seeds the
sampling of that sample (``generate/engines/base.py: sample_id -> seed``). Named by its folder's
path, a local model would give other ids, and so other texts, in another checkout, on another
node's mount or after a move, and a finished job there would be refused as "other settings".
A local folder is therefore named by the SHA-256 of the files a loader reads from it:

    identity(folder) = "folder:" + sha256( for f in sorted(model files of folder):
                                             f.name, size(f), sha256(bytes(f)) )[:16]

Model files are the folder's own files (not its subfolders: transformers and vLLM load from the
top level) with a suffix in :data:`MODEL_SUFFIXES`: weights, configs, tokenizer and chat
template files. Other files (a README, bias-ray's training record ``bias_ray_model.json``) do not
change what the model writes. A hub id (or a served model name) names itself.

Hashing reads every byte once: 1.0 GiB/s on one core of the 2-core test machine, ~14 s for a 15 GB
model (``bench/model_identity.py``). Digests of folders above
:data:`CACHE_ABOVE_BYTES` are kept in ``$BIAS_RAY_CACHE/model_digests.json`` (default
``~/.cache/bias-ray``), keyed by the folder's real path and each file's size and mtime, so a folder
is read once until its files change.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

from bias_ray.runtime import cache_dir

MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".model", ".txt", ".jinja",
                  ".tiktoken", ".py")
NOT_MODEL_FILES = frozenset({"bias_ray_model.json"})  # bias-ray's record of how it trained the tiny model
CACHE_ABOVE_BYTES = 256 << 20
DIGEST_FILE = "model_digests.json"


def model_files(folder: Path) -> list[Path]:
    """The files of ``folder`` that a model loader reads, sorted by name."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix in MODEL_SUFFIXES
                  and p.name not in NOT_MODEL_FILES)


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_sha256(path: Path) -> str:
    """The SHA-256 of one file's bytes, hex (a GGUF file's cache name, :mod:`bias_ray.models.gguf`)."""
    return _file_sha256(path)


def folder_digest(folder: str | Path) -> str:
    """16 hex digits naming the content of the model in ``folder`` (see the module's formula)."""
    folder = Path(folder).expanduser().resolve()
    files = model_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder} holds no model files ({', '.join(MODEL_SUFFIXES)}); give a folder saved "
                                "with save_pretrained")
    stats = [(p.name, p.stat()) for p in files]
    key = [[name, st.st_size, st.st_mtime_ns] for name, st in stats]
    cached = sum(st.st_size for _, st in stats) > CACHE_ABOVE_BYTES
    if cached:
        entry = _read_cache().get(str(folder))
        if entry and entry.get("files") == key:
            return str(entry["digest"])
    h = hashlib.sha256()
    for p, (name, st) in zip(files, stats):
        h.update(f"{name}\x1f{st.st_size}\x1f{_file_sha256(p)}\x1e".encode())
    digest = h.hexdigest()[:16]
    if cached:
        _write_cache(str(folder), {"files": key, "digest": digest})
    return digest


def model_identity(reference: str | Path) -> str:
    """``folder:<digest>`` for a local model folder, else the reference itself (a hub id names itself)."""
    path = Path(str(reference)).expanduser()
    if path.is_dir():
        return f"folder:{folder_digest(path)}"
    return str(reference)


def _read_cache() -> dict:
    try:
        return json.loads((cache_dir() / DIGEST_FILE).read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or a broken one: hash again


def _write_cache(folder: str, entry: dict) -> None:
    """Add one folder's digest; atomic, and a cache that cannot be written is only a cost."""
    try:
        path = cache_dir() / DIGEST_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = _read_cache()
        entries[folder] = entry
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass
