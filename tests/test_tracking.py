"""W&B in one module: modes, and quiet runs with the current reinit API."""

from __future__ import annotations

import warnings

import pytest

from bias_ray import tracking


def test_modes(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert tracking.wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.wandb_mode("auto") == "online"
    assert tracking.wandb_mode("disabled") == "disabled"
    with pytest.raises(ValueError, match="use one of offline, online, disabled, auto"):
        tracking.wandb_mode("sometimes")


def test_offline_run_is_quiet_and_uses_the_current_reinit_api(tmp_path, capfd):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecation warning (e.g. reinit=True) fails the test
        run = tracking.start_run("offline", tmp_path / "wandb", "bias-ray-test", "quiet", "test", config={"a": 1})
        run.log({"x": 1.0})
        reinit = run.settings.reinit
        run.finish()
    assert isinstance(reinit, str)  # wandb deprecates a boolean reinit (what wandb.init(reinit=True) gave)
    out, err = capfd.readouterr()
    assert "wandb:" not in out + err  # no banners, no sync hints
    assert list((tmp_path / "wandb").rglob("*.wandb"))
