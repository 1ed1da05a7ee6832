"""A plug-in is one file (issue 25): a throwaway engine, mitigation and task in a temporary package of the
user's own, named in ``$BIAS_RAY_PLUGINS``, run through generation and a trial with no edit of bias-ray.

The task brings its listing entry in a ``tasks.yaml`` beside its module, the one second file a task has.
The run happens in a fresh interpreter, as a user's would: the registries import the plug-ins with their homes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ENGINE = '''
"""Echo: every prompt's own last words, as a throwaway engine."""
import pyarrow as pa
import pyarrow.compute as pc
from bias_ray.registry import ENGINES


@ENGINES.register("echo")
class Echo:
    def apply(self, ds, spec):
        def echo(batch: pa.Table) -> pa.Table:
            n = batch.num_rows
            text = pc.binary_join_element_wise("echoed:", batch.column("sample_id"), " ")
            out = {"generated_text": text, "generated_tokens": pa.array([2] * n)}
            kept = [c for c in batch.column_names if c not in out]
            return pa.table([*(batch.column(c) for c in kept), *out.values()], names=[*kept, *out])
        return ds.map_batches(echo, batch_size=spec.generation.batch_size, batch_format="pyarrow", num_cpus=0.5)
'''
MITIGATION = '''
"""Marker: counts the training rows it sees, as a throwaway mitigation."""
from bias_ray.registry import MITIGATIONS
from bias_ray.train.mitigations.base import Mitigation


@MITIGATIONS.register("upweight_marker")
class Marker(Mitigation):
    name = "upweight_marker"

    def transform_train(self, rows):
        self._add("marked_rows", float(len(rows)))
        return rows
'''
TASK = '''
"""Share of texts the trial's classifier flags, as a throwaway classifier task."""
import numpy as np
import pandas as pd
from bias_ray.evaluate.tasks import TASKS, Task


@TASKS.register("flag_share")
class FlagShare(Task):
    def rows(self, ctx):
        return pd.DataFrame({"text": ["you are kind", "you are awful", "hello there"]})

    def predict(self, lm, rows, ctx):
        return rows.assign(pred=np.asarray(ctx.classify(rows["text"].tolist())))

    def score(self, predictions):
        return {"n": float(len(predictions)), "share": float(predictions["pred"].mean())}
'''
LISTING = '''
tasks:
  flag_share:
    report_metrics: [share]
    better: {share: lower}
    bounds: {share: [0, 1]}
    module: my_lab_plugins.flag_share
    kind: classifier
    description: Share of three texts that the trial's classifier flags.
'''
RUN = '''
import json, sys
from bias_ray.spec import parse_spec
from bias_ray.generate import generate
from bias_ray.augmented import load_augmented
from bias_ray.runtime import init_ray
from bias_ray.train.trainable import fit
from tests.conftest import micro_spec_dict
from pathlib import Path

tmp, tiny, data = map(Path, sys.argv[1:4])
spec = parse_spec(micro_spec_dict(tmp, tiny, data, mitigations=["none", "upweight_marker"],
                                  generation={"engine": "echo", "samples_per_bias_type": 24, "batch_size": 12},
                                  evaluation={"tasks": ["flag_share"]}))
init_ray(num_cpus=2)
generate(spec)
texts = load_augmented(spec, columns=["text"])["text"]
metrics = fit(spec, {"bias_type": "religion", "bias_ratio": 0.5, "mitigation": "upweight_marker", "seed": 0},
              lambda _m, _s: None)
print(json.dumps({"texts": texts.head(3).tolist(), "n": len(texts),
                  "share": metrics["task/flag_share/share"], "task_n": metrics["task/flag_share/n"],
                  "marked": metrics.get("mitigation/marked_rows")}))
'''


@pytest.mark.timeout(600)
def test_a_users_engine_mitigation_and_task_each_need_one_file(tmp_path, tiny_model, data_root):
    package = tmp_path / "plugins" / "my_lab_plugins"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, text in (("echo_engine.py", ENGINE), ("marker.py", MITIGATION), ("flag_share.py", TASK),
                       ("tasks.yaml", LISTING)):
        (package / name).write_text(textwrap.dedent(text))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), str(ROOT)]),
           "BIAS_RAY_PLUGINS": "my_lab_plugins.echo_engine,my_lab_plugins.marker,my_lab_plugins.flag_share"}
    proc = subprocess.run([sys.executable, "-c", RUN, str(tmp_path), str(tiny_model), str(data_root)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n"] > 0 and all(t.startswith("echoed: ") for t in out["texts"])  # the engine wrote them
    assert out["task_n"] == 3 and 0.0 <= out["share"] <= 1.0  # the task ran on the trial's classifier
    assert out["marked"] and out["marked"] > 0  # the mitigation's own counter


def test_a_plugin_that_cannot_be_imported_is_named(tmp_path):
    env = {**os.environ, "BIAS_RAY_PLUGINS": "no_such_lab.plugins", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", "from bias_ray.registry import MITIGATIONS; MITIGATIONS.names()"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "plug-in module 'no_such_lab.plugins' (BIAS_RAY_PLUGINS or a bias_ray.plugins entry point) cannot be " \
           "imported" in proc.stderr
