"""W&B in one module: modes, and quiet runs with the current reinit API."""

from __future__ import annotations

import time
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


def _trial(trial_id: str, ratio: float):
    from types import SimpleNamespace

    return SimpleNamespace(trial_id=trial_id, config={"bias_ratio": ratio, "mitigation": "none", "spec": {"x": 1}})


def test_trial_runs_live_in_the_driver_one_per_trial(tmp_path, capfd):
    """Interleaved trials, a retried one, a failed one: a run each, its cell tags and numbers, no actors."""
    import cloudpickle

    folder = tmp_path / "wandb"
    [callback] = tracking.trial_callbacks("offline", folder, "bias-ray-test", "sweep-x", ["mine"],
                                          ["bias_ratio", "mitigation"])
    a, b, c = _trial("aaaa0001", 0.0), _trial("bbbb0002", 0.5), _trial("cccc0003", 0.9)
    callback.log_trial_start(a)
    callback.log_trial_start(b)
    callback.log_trial_result(1, a, {"macro_f1": 0.61, "step": 4, "done": False, "config": {"x": 1}})
    callback.log_trial_result(1, b, {"macro_f1": 0.52, "step": 4, "flag": True})
    callback.log_trial_end(b, failed=True)  # Tune retries it: the retry logs into the same run
    callback.log_trial_start(b)
    callback.log_trial_result(2, b, {"fpr_gap_after_retry": 0.1})
    callback.log_trial_end(a)
    callback.log_trial_end(b)
    callback.log_trial_result(1, c, {"macro_f1": 0.4})  # a result before its start: the run opens then
    callback.log_trial_end(c, failed=True)
    assert set(cloudpickle.loads(cloudpickle.dumps(callback)).runs) == set()  # saved without live runs
    callback.on_experiment_end([a, b, c])  # c, never retried, finishes as failed
    runs = {r.name.rsplit("-", 1)[1]: r for r in (folder / "wandb").glob("offline-run-*")}
    assert sorted(runs) == ["aaaa0001", "bbbb0002", "cccc0003"]
    # W&B's service process writes the files; on a loaded machine the last records can land after finish returns
    deadline = time.time() + 60
    while True:
        logs = {k: next(r.glob("*.wandb")).read_bytes() for k, r in runs.items()}
        if all(b"macro_f1" in logs[k] for k in ("aaaa0001", "cccc0003")) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert b"bias_ratio=0.0" in logs["aaaa0001"] and b"mine" in logs["aaaa0001"] and b"sweep-x" in logs["aaaa0001"]
    assert b"bias_ratio=0.5" in logs["bbbb0002"] and b"fpr_gap_after_retry" in logs["bbbb0002"]
    assert b"macro_f1" in logs["cccc0003"] and b"fpr_gap_after_retry" not in logs["aaaa0001"]
    out, err = capfd.readouterr()
    assert "wandb:" not in out + err
    assert tracking.trial_metrics({"a": 1, "b": True, "c": "x", "done": 1.0, "d": 0.5}) == {"a": 1, "d": 0.5}


def test_long_cell_tags_fit_wandb_and_stay_distinct(tmp_path):
    """A mitigation with its parameters is longer than W&B's 64-character tag limit: the run still starts."""
    js = {"mitigation": "loss(divergence=js,lambda=1.0,reference=counterfactual)", "seed": 0}
    kl = {"mitigation": "loss(divergence=kl,lambda=1.0,reference=counterfactual)", "seed": 0}
    tags = tracking.cell_tags(js, ["mitigation", "seed"]), tracking.cell_tags(kl, ["mitigation", "seed"])
    assert all(len(t) <= 64 for t in tags[0] + tags[1]) and tags[0][0] != tags[1][0] and tags[0][1] == "seed=0"
    assert tracking.cell_tags({"bias_ratio": 0.5}, ["bias_ratio"]) == ["bias_ratio=0.5"]
    folder = tmp_path / "wandb"
    [callback] = tracking.trial_callbacks("offline", folder, "bias-ray-test", "g", [], ["mitigation", "seed"])
    trial = _trial("llll0001", 0.5)
    trial.config.update(js)
    callback.log_trial_start(trial)
    callback.log_trial_result(1, trial, {"macro_f1": 0.5})
    callback.log_trial_end(trial)
    callback.on_experiment_end([trial])
    [run] = (folder / "wandb").glob("offline-run-*-llll0001")
    assert b"reference=counterfactual" in next(run.glob("*.wandb")).read_bytes()  # the full value, in the config
