"""`bias-ray run` runs every stage of the method in order, and the spec's switch turns the analysis off.

The stages themselves are replaced by fakes that leave their outputs, so this checks the wiring
in seconds; tests/test_end_to_end.py runs the real stages.
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tests.test_report import _results


@pytest.fixture
def fake_stages(monkeypatch):
    import bias_ray.analysis
    import bias_ray.cli
    import bias_ray.generate.pipeline
    import bias_ray.train.sweep

    calls: list[str] = []

    def analyze(spec):
        calls.append("analyze")
        folder = spec.run_dir / "analysis"
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"bias_type": ["gender", "religion"], "value_gap": [0.2, 0.1], "group_js": [0.3, 0.05],
                      "mmd": [0.04, 0.01]}).to_csv(folder / "summary.csv", index=False)
        return folder

    def run_sweep(spec, resume=False, **_):  # the CLI also passes its live view callbacks
        calls.append("sweep")
        table = _results(spec.run_dir, hatecheck=False)
        bias_ray.train.sweep.write_results(table, spec.results_path)
        return table

    monkeypatch.setattr(bias_ray.cli, "_prepare_models", lambda spec: calls.append("models"))
    monkeypatch.setattr(bias_ray.cli, "_start_ray_for_generation", lambda: calls.append("ray"))
    monkeypatch.setattr(bias_ray.generate.pipeline, "measure_generation", lambda spec: calls.append("measure"))

    def generate(spec):
        calls.append("generate")
        return spec.run_dir / "data" / "augmented"  # no manifest: nothing to show of what it wrote

    monkeypatch.setattr(bias_ray.generate.pipeline, "generate", generate)
    monkeypatch.setattr(bias_ray.analysis, "analyze", analyze)
    monkeypatch.setattr(bias_ray.train.sweep, "run_sweep", run_sweep)
    return calls


def _spec(tmp_path, data_root, **extra) -> str:
    spec = {"name": "wiring", "output_dir": str(tmp_path / "run"), "data": {"root": str(data_root)},
            "models": {"generator": str(tmp_path / "m"), "student": str(tmp_path / "m"), "build_tiny_if_missing": True},
            "bias_types": ["gender", "religion"], "bias_ratios": [0.0, 0.5, 0.9], "mitigations": ["none", "token"],
            "seeds": [0, 1], "tracking": {"wandb": "disabled"}, "evaluation": {"tasks": []}, **extra}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.timeout(300)
def test_run_is_generate_analyze_sweep_report(tmp_path, data_root, fake_stages):
    from bias_ray.cli import app

    result = CliRunner().invoke(app, ["run", _spec(tmp_path, data_root)])
    assert result.exit_code == 0, result.output
    # Ray and Ray Data start while the models are prepared; what the generator wrote is measured after the job
    assert fake_stages == ["ray", "models", "generate", "measure", "analyze", "sweep"]
    report = tmp_path / "run" / "report"
    lines = result.output.strip().splitlines()
    assert lines[-2] == f"report: {report / 'report.html'}"
    assert lines[-1].startswith("No headline figure: the results have no task/hatecheck/target_fpr column")
    page = (report / "report.html").read_text()
    assert 'id="summary"' in page and "Models: generator <code>" in page  # the run recorded its spec
    assert 'class="dataframe misalignment-harm"' in page


@pytest.mark.timeout(300)
def test_analysis_switch_turns_it_off(tmp_path, data_root, fake_stages):
    from bias_ray.cli import app

    result = CliRunner().invoke(app, ["run", _spec(tmp_path, data_root, analysis={"enabled": False})])
    assert result.exit_code == 0, result.output
    assert fake_stages == ["ray", "models", "generate", "measure", "sweep"]
    assert "skipped: the spec sets analysis.enabled: false" in result.output
    page = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "off in this run's spec (<code>analysis.enabled: false</code>)" in page
