"""Stages don't reach into each other, and the package has no import circle.

Two views: a fresh interpreter per stage (what importing a stage really loads), and the static
import graph of every ``import`` statement, the lazy ones inside functions included.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bias_ray"
STAGES = ("generate", "train", "evaluate", "report", "analysis")
# stage -> stages it may use, only through the other stage's package (its public surface, e.g.
# `from bias_ray.generate import generate_texts`). What several stages share lies below them, in the
# shared layers: the augmented data is read through bias_ray.augmented, the metrics, encoder, stance
# classifier and LM scorer are bias_ray.measures, the task listing is bias_ray.catalog. What remains:
ALLOWED = {
    "generate": set(),
    "evaluate": set(),
    "report": set(),
    "train": {"evaluate"},  # a trial runs the downstream tasks on its model (bias_ray.evaluate.run_tasks)
    "analysis": {"generate"},  # the neutral probes are answered by the generator (generate_texts)
}
# layers below the stages: they may import none of them
SHARED = ("spec", "catalog", "registry", "tracking", "runtime", "mix", "data", "models", "progress", "lexicons",
          "augmented", "measures")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts).removesuffix(".__init__")] = path
    return out


def _imports(path: Path, module_level_only: bool) -> list[tuple[str, int]]:
    """(imported bias_ray module, line) for each import in the file."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bias_ray"):
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("bias_ray")]
    return found


def _owner(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _resolve(name: str, modules: dict[str, Path]) -> str:
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


def test_no_stage_imports_another_stages_internals():
    modules = _modules()
    bad = []
    for module, path in modules.items():
        me = _owner(module)
        for target, line in _imports(path, module_level_only=False):
            them = _owner(target)
            if them is None or them == me or them not in STAGES or me == "cli":
                continue
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if me in SHARED:
                bad.append(f"{where}: the shared layer {me!r} must not import a stage")
            elif me in ALLOWED and them not in ALLOWED[me]:
                bad.append(f"{where}: stage {me!r} must not use stage {them!r}")
            elif me in ALLOWED and _resolve(target, modules) != f"bias_ray.{them}":
                bad.append(f"{where}: use the public bias_ray.{them} package, not its internals")
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("module_level_only", [True, False], ids=["module-level", "with-lazy-imports"])
def test_import_graph_has_no_cycles(module_level_only):
    modules = _modules()
    graph = {m: {_resolve(t, modules) for t, _ in _imports(p, module_level_only)} - {m} for m, p in modules.items()}
    assert not _cycles(graph), f"import cycles: {_cycles(graph)}"


def test_spec_names_plugins_without_importing_them():
    """The spec checks engine, mitigation and task names through bias_ray.registry, not the plug-in packages."""
    modules = _modules()
    targets = {_owner(t) for t, _ in _imports(modules["bias_ray.spec"], module_level_only=False)}
    assert not targets & set(STAGES), f"bias_ray.spec imports stage(s) {sorted(targets & set(STAGES))}"
    from bias_ray.registry import ENGINES, MITIGATIONS, TASKS

    assert {"transformers", "http", "vllm"} <= set(ENGINES.names())
    assert {"none", "token", "mask", "loss"} <= set(MITIGATIONS.names())
    assert "toxigen" in TASKS


_LOADED = """
import importlib, json, pkgutil, sys
pkg = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted({m.split(".")[1] for m in sys.modules if m.startswith("bias_ray.")})))
"""


@pytest.mark.parametrize("stage", [*STAGES, "data", "spec", "augmented", "measures", "mix"])
def test_importing_a_stage_loads_no_stage_it_must_not_use(stage):
    """A fresh interpreter imports every module of the stage; no forbidden stage may come along."""
    package = f"bias_ray.{stage}"
    code = _LOADED if (PACKAGE / stage).is_dir() else _LOADED.replace("pkg.__path__", "[]")
    done = subprocess.run([sys.executable, "-c", code, package], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    forbidden = set(STAGES) - {stage} - ALLOWED.get(stage, set())
    assert not loaded & forbidden, f"importing {package} loaded {sorted(loaded & forbidden)}"


def test_the_spec_schema_leaves_files_and_models_to_the_checks():
    """``spec/schema.py`` validates what a spec says; what it names on this machine (the task data, the prompt
    template, the model folders and hub ids) is read by ``spec/checks.py`` alone, and no module of the spec
    package uses a stage."""
    modules = _modules()
    schema = {t for t, _ in _imports(modules["bias_ray.spec.schema"], module_level_only=False)}
    reading = sorted(t for t in schema if _owner(t) in ("data", "models", "framings"))
    assert not reading, f"spec/schema.py imports {reading}; such checks belong in spec/checks.py"
    source = modules["bias_ray.spec.schema"].read_text()
    reads = re.findall(r"\.(?:is_file|exists|read_text|read_bytes)\(|\bopen\(", source)
    assert not reads, f"spec/schema.py reads files ({reads}); such checks belong in spec/checks.py"
    package = {t for m, path in modules.items() if m.startswith("bias_ray.spec")
               for t, _ in _imports(path, module_level_only=False)}
    assert not {_owner(t) for t in package} & set(STAGES)
