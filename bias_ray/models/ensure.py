"""The folder of a model reference before a run: a hub id resolved, a folder checked, the tiny model built.

Apart from :mod:`.tiny` and :mod:`.pretrain` (which it uses), so neither imports the other's caller.
"""

from __future__ import annotations

from pathlib import Path

from bias_ray.models.pretrain import PretrainConfig


def ensure_model(path: str | Path, data_root: str | Path, build_if_missing: bool, pretrain: bool = False,
                 test_fraction: float = 0.3, config: PretrainConfig | None = None) -> Path:
    """The folder of a model reference before a run: a hub id is resolved (its config, from the cache or
    the hub: see models/hub.py); a GGUF file is dequantized into its cached folder (models/gguf.py); a
    folder is returned if it holds a model, else the tiny model is built
    there when allowed.

    With ``pretrain`` the tiny model is pretrained (:mod:`bias_ray.models.pretrain`); a folder that
    bias-ray pretrained earlier is reused when its fingerprint (corpus + config) matches and
    retrained when not. A folder bias-ray did not build is always used as it is.
    """
    from bias_ray.models.hub import check_hub_access, source_kind
    from bias_ray.models.pretrain import pretrain_tiny_model, read_info
    from bias_ray.models.tiny import build_tiny_model

    kind = source_kind(str(path), build_if_missing)
    if kind == "hub":
        return check_hub_access(str(path))
    if kind == "gguf":
        from bias_ray.models.gguf import ensure_converted

        return ensure_converted(str(path))

    path = Path(path).expanduser()
    info = read_info(path)
    built_here = info.get("kind") in ("tiny", "tiny-pretrained")
    if (path / "config.json").exists() and not (build_if_missing and pretrain and built_here):
        return path
    if not build_if_missing:
        raise FileNotFoundError(
            f"no model at {path}: give a folder saved with save_pretrained, or run `bias-ray models tiny {path}`"
        )
    if pretrain:
        return pretrain_tiny_model(path, data_root, test_fraction, config)
    return build_tiny_model(path, data_root, test_fraction=test_fraction)


def prepare_models(spec, fields: list[str], status=None) -> None:
    """Every model of ``fields`` (``generator``, ``student``) ready before any work: hub ids resolved, the tiny
    model built or pretrained where asked, and a GGUF file dequantized, its spec field then naming the folder,
    so every later stage and Ray worker loads the folder. ``status(message)``: a context manager shown
    while a GGUF file converts (the CLI's spinner)."""
    from contextlib import nullcontext

    from bias_ray.models.hub import source_kind

    m = spec.models
    config = PretrainConfig(max_steps=m.pretrain_max_steps, max_seconds=m.pretrain_max_seconds)
    for field in fields:
        value = getattr(m, field)
        gguf = source_kind(value, m.build_tiny_if_missing) == "gguf"
        shown = status(f"dequantizing the GGUF file of models.{field} (once; cached)") if gguf and status else \
            nullcontext()
        with shown:
            folder = ensure_model(value, spec.data.resolved_root, m.build_tiny_if_missing, pretrain=m.pretrain_tiny,
                                  test_fraction=spec.data.test_fraction, config=config)
        if gguf:
            setattr(m, field, str(folder))
