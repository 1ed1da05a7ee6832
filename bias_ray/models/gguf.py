"""GGUF files as a model source: dequantized once into a safetensors folder, cached under their content.

A ``models.generator`` or ``models.student`` ending in ``.gguf`` names a GGUF file, in one of two forms
(the two ``from_pretrained(..., gguf_file=...)`` takes):

- a local path (``models/smollm2.Q4_1.gguf``, ``/data/m.gguf``);
- a hub id with the file's name after it: ``owner/name/FILE.gguf`` (the user's ``HF_HUB_OFFLINE``
  decides whether it may be downloaded; offline it must be in the cache).

transformers keeps GGUF weights quantized when it loads them and refuses ``save_pretrained`` and
``dequantize()`` on such a model, and every Ray worker (and vLLM) would dequantize again. So the file
is converted once, before any work:

    tensors = gguf_utils.load_gguf_checkpoint(file, return_tensors=True, model_to_load=<config's model on meta>)
    model   = AutoModelForCausalLM.from_config(config, float32).load_state_dict(tensors); tie_weights()
    folder  = $BIAS_RAY_CACHE/gguf/<sha256(file)[:16]>/  (save_pretrained + the GGUF's tokenizer and chat template)

Later loads, every worker and vLLM read the folder. The folder is written under a temporary name and
renamed into place, so a crash leaves no half folder; two processes converting at once both finish and
one folder stays. The folder is then a model like any other: :func:`bias_ray.models.identity.model_identity`
names it by its files' digest in sample ids. What this relies on (``load_gguf_checkpoint``'s
``model_to_load``, the ``gguf`` package) is pinned in ``pyproject.toml`` and tested
(``tests/test_gguf.py``, on the real SmolLM2 file).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from bias_ray.runtime import cache_dir

SUFFIX = ".gguf"
MAGIC = b"GGUF"
_HUB_FILE = re.compile(r"^([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)/(.+\.gguf)$", re.IGNORECASE)


class GGUFError(ValueError):
    """A GGUF reference that cannot be read: the message names the file and the fix."""


@dataclass(frozen=True)
class GGUFReference:
    """Where a ``.gguf`` model reference points: a local file, or a file of a hub repository."""

    value: str
    path: Path | None = None  # local file
    repo_id: str | None = None  # hub repository
    filename: str | None = None  # the file within the repository

    @property
    def is_local(self) -> bool:
        return self.path is not None


def is_gguf(value: str | Path) -> bool:
    """True when a model reference names a GGUF file (its name ends in ``.gguf``)."""
    return str(value).lower().endswith(SUFFIX)


def parse_reference(value: str) -> GGUFReference:
    """A local file when it exists or looks like a path (``/``, ``.``, ``~``), else ``owner/name/FILE.gguf``."""
    path = Path(value).expanduser()
    if path.exists() or value.startswith(("/", ".", "~")):
        return GGUFReference(value, path=path.resolve())
    m = _HUB_FILE.match(value)
    if m is None:
        raise GGUFError(f"{value!r} is neither an existing .gguf file nor a hub file reference owner/name/FILE.gguf "
                        "(e.g. HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf)")
    return GGUFReference(value, repo_id=m.group(1), filename=m.group(2))


def header_problem(path: Path) -> str | None:
    """Why ``path`` is not a GGUF file, from its first bytes only (cheap enough for validation), or None."""
    if not path.is_file():
        return f"{path} does not exist; give an existing .gguf file or a hub file reference owner/name/FILE.gguf"
    with open(path, "rb") as f:
        head = f.read(4)
    if head != MAGIC:
        return (f"{path} is not a GGUF file (its first bytes are {head!r}, not {MAGIC!r}); download it again or "
                "give a model folder saved with save_pretrained")
    return None


def local_file(ref: GGUFReference) -> Path:
    """The GGUF file on this machine: the local path, or the hub file from the cache (downloaded when online)."""
    if ref.is_local:
        return ref.path  # type: ignore[return-value]
    from huggingface_hub import hf_hub_download

    from bias_ray.models.hub_env import hub_cache_dir, hub_offline, offline_fix

    try:
        return Path(hf_hub_download(ref.repo_id, ref.filename, cache_dir=hub_cache_dir()))
    except Exception as err:  # noqa: BLE001  (hub, auth and network errors end the same way)
        if hub_offline():
            raise GGUFError(offline_fix(ref.repo_id, ref.filename)) from None
        first = str(err).splitlines()[0] if str(err) else ""
        raise GGUFError(f"cannot fetch {ref.filename} from hub repository {ref.repo_id}: {type(err).__name__}: "
                        f"{first}. Check the repository and the file's name") from None


def converted_folder(path: Path) -> Path:
    """Where the dequantized folder of the GGUF file ``path`` lives: named by the file's SHA-256."""
    from bias_ray.models.identity import file_sha256

    return cache_dir() / "gguf" / file_sha256(path)[:16]


def ensure_converted(value: str, out_dir: str | Path | None = None) -> Path:
    """The safetensors folder of the GGUF reference ``value``: converted now, or found from an earlier run.

    ``out_dir``: write the folder there instead of the cache (``bias-ray models smollm2 OUT``).
    """
    path = local_file(parse_reference(value))
    if problem := header_problem(path):
        raise GGUFError(problem)
    cached = converted_folder(path)
    target = Path(out_dir).expanduser().resolve() if out_dir else cached
    if _is_model_folder(target):
        return target
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if target != cached and _is_model_folder(cached):
            shutil.copytree(cached, tmp)  # converted before: a copy, not a second dequantization
        else:
            convert(path, tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not any(target.iterdir()):
            target.rmdir()
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not another process's finished folder: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def convert(path: Path, out: Path) -> Path:
    """Dequantize the GGUF file ``path`` into a float32 safetensors folder ``out`` (model, tokenizer, chat template)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from bias_ray.runtime import quiet_libraries

    quiet_libraries()
    folder, name = str(path.parent), path.name
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=True)  # its per-tensor bar, which no logging setting reaches
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        with torch.device("meta"):
            shell = AutoModelForCausalLM.from_config(config)
        try:
            loaded = gguf_utils.load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=shell)
        except TypeError:  # transformers before model_to_load: the tensors are named for the config alone
            loaded = gguf_utils.load_gguf_checkpoint(str(path), return_tensors=True)
        tensors = loaded["tensors"]
    except (ValueError, IndexError, KeyError, OSError, RuntimeError) as err:
        raise GGUFError(f"cannot read the GGUF file {path}: {type(err).__name__}: {str(err).splitlines()[0][:200]}. "
                        "It is truncated, corrupt or of an architecture transformers cannot load from GGUF; "
                        "download it again, or give a model folder saved with save_pretrained") from None
    finally:
        gguf_utils.tqdm = bar
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = {k: v.to(torch.float32) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise GGUFError(f"the GGUF file {path} does not match its own config: missing {sorted(set(missing) - tied)[:3]}"
                        f", unexpected {sorted(unexpected)[:3]}; give a model folder saved with save_pretrained")
    model.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
