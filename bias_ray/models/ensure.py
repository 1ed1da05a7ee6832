"""The folder of a model reference before a run: a hub id resolved, a folder checked, the tiny model built.

Apart from :mod:`.tiny` and :mod:`.pretrain` (which it uses), so neither imports the other's caller.
"""

from __future__ import annotations

from pathlib import Path

from bias_ray.models.pretrain import PretrainConfig


def ensure_model(path: str | Path, data_root: str | Path, build_if_missing: bool, pretrain: bool = False,
                 test_fraction: float = 0.3, config: PretrainConfig | None = None) -> Path:
    """The folder of a model reference before a run: a hub id is resolved (its config, from the cache or
    the hub: see models/hub.py); a folder is returned if it holds a model, else the tiny model is built
    there when allowed.

    With ``pretrain`` the tiny model is pretrained (:mod:`bias_ray.models.pretrain`); a folder that
    bias-ray pretrained earlier is reused when its fingerprint (corpus + config) matches and
    retrained when not. A folder bias-ray did not build is always used as it is.
    """
    from bias_ray.models.hub import check_hub_access, source_kind
    from bias_ray.models.pretrain import pretrain_tiny_model, read_info
    from bias_ray.models.tiny import build_tiny_model

    if source_kind(str(path), build_if_missing) == "hub":
        return check_hub_access(str(path))

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
