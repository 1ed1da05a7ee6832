"""The quiet CLI: library output goes to the run's log file, the terminal gets live views and one-line errors."""

from __future__ import annotations

import io
import logging
import os
import pickle
import sys
from types import SimpleNamespace

from rich.console import Console
from typer.testing import CliRunner

from bias_ray.progress import SweepProgress, SweepView, log_path, one_line, quiet_session


def test_quiet_session_sends_library_output_to_the_log(tmp_path):
    terminal = io.StringIO()
    console = Console(file=terminal, width=200)
    ray_style = logging.getLogger("ray.data.test")  # a handler made at import time, as Ray does
    ray_style.addHandler(logging.StreamHandler(sys.stderr))
    ray_style.propagate = False
    with quiet_session(tmp_path, console) as path:
        print("a library print")
        sys.stderr.write("a library stderr line\n")
        os.write(2, b"a C++ core_worker.cc line on descriptor 2\n")
        ray_style.warning("a Ray Data warning")
        logging.getLogger("ray.tune.test").error("saving the experiment failed\nTraceback: ...")
        console.print("the live view")
    assert path == log_path(tmp_path) == tmp_path / "logs" / "bias-ray.log"
    shown, logged = terminal.getvalue(), path.read_text()
    assert shown.splitlines() == [f"error ray.tune.test: saving the experiment failed (details: {path})",
                                  "the live view"]  # errors: one line each; warnings only in the log
    for line in ("a library print", "a library stderr line", "core_worker.cc line", "a Ray Data warning"):
        assert line in logged and line not in shown
    assert os.environ.get("BIAS_RAY_DATA_PROGRESS") != "0"  # restored after the session


def test_verbose_leaves_output_alone(tmp_path, capsys):
    console = Console(file=io.StringIO())
    with quiet_session(tmp_path, console, verbose=True) as path:
        print("streamed")
    assert "streamed" in capsys.readouterr().out
    assert not path.exists() or "streamed" not in path.read_text()


def test_sweep_progress_counts_best_and_eta():
    p = SweepProgress(total_trials=4, metric="macro_f1", mode="max")
    p.started -= 10.0  # 10 s elapsed
    for t in "abcd":
        p.start(t)
    p.result("a", {"macro_f1": 0.5, "step": 10, "total_steps": 10})
    p.result("b", {"macro_f1": 0.7, "step": 2, "total_steps": 10})
    p.complete("a")
    p.complete("b")  # stopped after 2 of 10 steps: early
    p.error("c")
    line = p.line().plain
    assert "3/4 trials done" in line and "1 running" in line and "1 stopped early" in line and "1 failed" in line
    assert "best macro_f1 0.7000" in line
    assert abs(p.eta() - 10.0 * (1 - 0.75) / 0.75) < 0.5  # 3 of 4 trials' steps accounted for


def test_sweep_view_hooks_and_pickling():
    console = Console(file=io.StringIO(), width=200)
    view = SweepView(2, "macro_f1", "min", console)
    view.setup()
    trial = SimpleNamespace(trial_id="t1")
    view.on_trial_start(0, [], trial)
    view.on_trial_result(0, [], trial, {"macro_f1": 0.3, "step": 5, "total_steps": 5})
    view.on_trial_complete(0, [], trial)
    view.on_experiment_end([])
    assert view.progress.done == 1 and view.progress.best == 0.3
    assert "1/2 trials done" in console.file.getvalue()
    console.print("results")  # off a terminal (a log, CI) the view's last line ends before what follows
    assert console.file.getvalue().splitlines()[-1] == "results"
    restored = pickle.loads(pickle.dumps(view))  # Tune saves its callbacks with the experiment
    assert restored.console is None and restored.progress.done == 1


def test_cli_error_is_one_line_with_the_log_path(tmp_path, data_root, monkeypatch):
    import yaml

    from bias_ray import cli
    from bias_ray.generate import pipeline

    def fail(spec, progress=None):
        raise RuntimeError("the engine broke\nsecond line of detail")

    monkeypatch.setattr(pipeline, "generate", fail)
    monkeypatch.setattr(cli, "_prepare_models", lambda spec: None)
    spec = {"name": "err", "output_dir": str(tmp_path / "run"),
            "models": {"generator": str(tmp_path / "m"), "student": str(tmp_path / "m"), "build_tiny_if_missing": True},
            "data": {"root": str(data_root)}, "bias_types": ["gender"], "bias_ratios": [0.5], "mitigations": ["none"]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(cli.app, ["generate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 1
    log = tmp_path / "run" / "logs" / "bias-ray.log"
    assert result.output.split() == f"error RuntimeError: the engine broke (details: {log})".split()
    assert "second line of detail" in log.read_text() and "Traceback" in log.read_text()
    assert one_line(ValueError("")) == "ValueError"


def test_failed_trials_are_one_line_each(tmp_path, data_root, monkeypatch):
    import pandas as pd

    from bias_ray import cli
    from bias_ray.spec import parse_spec
    from bias_ray.train import sweep

    table = pd.DataFrame({"bias_type": ["gender", "gender"], "bias_ratio": [0.0, 0.5], "mitigation": ["none", "none"],
                          "seed": [0, 0], "error": [None, "RuntimeError: CUDA out of memory"]})
    seen = {}

    def fake_run_sweep(spec, resume=False, trainable=None, extra_callbacks=None, verbose=1):
        seen["callbacks"], seen["verbose"] = extra_callbacks, verbose
        return table

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    spec = parse_spec({"name": "x", "output_dir": str(tmp_path), "data": {"root": str(data_root)},
                       "models": {"generator": "m", "student": "m", "build_tiny_if_missing": True},
                       "bias_types": ["gender"], "bias_ratios": [0.0, 0.5], "mitigations": ["none"]})
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=300))
    cli._run_sweep(spec, resume=False, verbose=False, log_file=tmp_path / "x.log")
    assert isinstance(seen["callbacks"][0], SweepView) and seen["verbose"] == 0  # Tune's own output off
    lines = [line for line in out.getvalue().splitlines() if line.startswith("failed")]
    assert lines == [f"failed trial gender ratio=0.5 none seed=0: RuntimeError: CUDA out of memory "
                     f"(details: {tmp_path / 'x.log'})"]
