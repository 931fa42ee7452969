"""The import rule as a test: each package imports only from the layers below it, MLflow (the library, its
tag names and its filter strings, its Run objects' `.info` and `.data`) is used in tracking/ alone, and the
tools (tools/) import the harness, never the reverse."""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lstm_mnist"

# Bottom to top; a package may import from a lower layer, never from its own layer's other packages or above.
LAYERS = [
    {"errors", "metrics", "tools.wheels", "__init__"},
    {"task"},
    {"config"},
    {"machine", "analysis"},
    {"claims", "training"},
    {"tracking"},
    {"engine"},
    {"runs", "tuning"},
    {"grids"},
    {"report", "gpu"},
    {"cli", "api"},
    {"tools"},  # gpu-probes, gpu-accept, the wheel folders: they import the harness, the harness never them
    {"__main__"},
    {"builtin"},  # the built-in task: a task above the whole harness, which reaches it only by name
]
LAYER = {p: i for i, layer in enumerate(LAYERS) for p in layer}
SELF_CONTAINED = {"tools.wheels"}  # runs before the project is installed: imports nothing of it
TOOLS = "tools"
ENTRY = "__main__"  # above the harness and the tools: it puts the tools' commands on the harness's parser
MLFLOW_ONLY_IN = "tracking"
FILTER = re.compile(r"\b(tags|params|metrics|attributes)\.[`\w.]+`?\s*(=|!=|<|>|LIKE|ILIKE|IN)\s")
RUN_FIELDS = {"info": {"run_id", "status", "run_name", "start_time", "end_time", "experiment_id", "artifact_uri",
                       "lifecycle_stage"}, "data": {"tags", "params", "metrics"}}


def _package(module: str) -> str:
    """The package a module counts in: its first level under lstm_mnist, or a self-contained package it is in."""
    parts = module.split(".")
    for package in SELF_CONTAINED:
        if parts[1:1 + package.count(".") + 1] == package.split("."):
            return package
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file, relative ones resolved."""
    rel = path.relative_to(root.parent).with_suffix("")
    here = list(rel.parts[:-1]) if path.name != "__init__.py" else list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                out += [(node.lineno, mod)] if node.module else [(node.lineno, f"{mod}.{a.name}") for a in node.names]
            elif node.module == root.name:  # `from lstm_mnist import x`: x is a package of it, as in `from .. import x`
                out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


def violations(root: Path = PACKAGE) -> list[str]:
    """Every breach of the rule under `root` (a package folder), one line each."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        me = _package(".".join(rel.with_suffix("").parts))
        for line, mod in _imports(path, root):
            where = f"{rel}:{line}"
            if mod.split(".")[0] == "mlflow" and me != MLFLOW_ONLY_IN:
                found.append(f"{where} imports {mod}: only {MLFLOW_ONLY_IN}/ may use MLflow")
            if mod.split(".")[0] != root.name:
                continue
            target = _package(mod)
            if target == me:
                continue
            if me in SELF_CONTAINED:
                found.append(f"{where} imports {mod}: {me.replace('.', '/')}/ must import nothing of the package")
            elif target not in LAYER or me not in LAYER:
                found.append(f"{where} imports {mod}: {me if me not in LAYER else target} is in no layer of this test")
            elif LAYER[target] >= LAYER[me]:
                found.append(f"{where} imports {mod}: {me} (layer {LAYER[me]}) may import only from layers below "
                             f"it, and {target} is in layer {LAYER[target]}")
        if me == MLFLOW_ONLY_IN:
            continue
        tree = ast.parse(path.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)  # docstrings may explain the vocabulary
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if "mlflow.parentRunId" in node.value or FILTER.search(node.value):
                    found.append(f"{rel}:{node.lineno} uses MLflow's tag or filter vocabulary ({node.value[:60]!r}): "
                                 "ask tracking/ (query.search(..., tag=value), Run.parent_id)")
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                  and node.attr in RUN_FIELDS.get(node.value.attr, ())):
                found.append(f"{rel}:{node.lineno} reads an MLflow run's .{node.value.attr}.{node.attr}: use "
                             "tracking.query.Run")
    return found


def harness_imports_of_tools(root: Path = PACKAGE) -> list[str]:
    """Every import of the tools by the harness under `root`: any module outside tools/ but the entry point."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        me = _package(".".join(rel.with_suffix("").parts))
        if me.split(".")[0] in (TOOLS, ENTRY):
            continue
        found += [f"{rel}:{line} imports {mod}: the harness never imports the tools ({TOOLS}/ imports the harness)"
                  for line, mod in _imports(path, root) if mod.split(".")[:2] == [root.name, TOOLS]]
    return found


def test_every_package_imports_only_downward_and_mlflow_stays_in_tracking():
    assert violations() == []


def test_the_harness_never_imports_the_tools():
    assert harness_imports_of_tools() == []


def test_the_rule_catches_the_harness_importing_a_tool_and_the_wheels_importing_the_package(tmp_path):
    root = tmp_path / "lstm_mnist"
    for pkg in ("gpu", "tools", "tools/wheels", "builtin"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "gpu" / "check.py").write_text("from ..tools import probes\n")
    (root / "builtin" / "model.py").write_text("from lstm_mnist import tools\n")
    (root / "cli.py").write_text("import lstm_mnist.tools.cli\n")
    (root / "__main__.py").write_text("from .tools import cli\n")
    (root / "tools" / "probes.py").write_text("from ..gpu import check\nfrom . import fused\n")
    (root / "tools" / "wheels" / "build.py").write_text("from . import lock\nfrom ... import config\n")
    (root / "tools" / "wheels" / "install.py").write_text("from ..probes import main\n")
    found = harness_imports_of_tools(root)
    assert [f.split(" ")[0] for f in found] == ["lstm_mnist/builtin/model.py:1", "lstm_mnist/cli.py:1",
                                                "lstm_mnist/gpu/check.py:1"], found
    found = [f for f in violations(root) if "wheels" in f]
    assert len(found) == 2 and all("tools/wheels/ must import nothing of the package" in f for f in found), found
    assert "build.py:2 imports lstm_mnist.config" in found[0] and "install.py:1 imports lstm_mnist.tools.probes" \
        in found[1]


def test_every_package_of_the_tree_is_in_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert (packages | modules) - set(LAYER) == set()


def test_the_rule_catches_an_upward_import_mlflow_and_its_vocabulary(tmp_path):
    root = tmp_path / "lstm_mnist"
    for pkg in ("engine", "grids", "report"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "engine" / "bad.py").write_text("from ..grids import grid\nimport mlflow\n")
    (root / "grids" / "worse.py").write_text(
        "from lstm_mnist.report import gather\nq = \"tags.config_hash = 'x'\"\nt = run.data.tags\np = r.info.status\n")
    (root / "report" / "fine.py").write_text("from ..grids import grid\nfrom . import gather\n")
    found = violations(root)
    assert len(found) == 6, found
    assert any("engine (layer 6) may import only from layers below it, and grids is in layer 8" in f for f in found)
    assert any("bad.py:2 imports mlflow" in f for f in found) and any("worse.py:1 imports lstm_mnist.report" in f
                                                                      for f in found)
    assert any("filter vocabulary" in f for f in found) and any(".data.tags" in f for f in found)
    assert not any("fine.py" in f for f in found)


def _imported(path: Path) -> set[str]:
    """Every module a file imports by name (absolute imports; relative ones resolved against lstm_mnist)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def test_a_task_of_ones_own_imports_only_the_protocol_and_the_harness_never_imports_a_task():
    """Tasks depend on the harness's protocol, never the reverse: the example task imports nothing of lstm_mnist
    but lstm_mnist.task, and no module of the package imports the examples."""
    example = PACKAGE.parent / "examples" / "digits" / "task.py"
    ours = {m for m in _imported(example) if m.split(".")[0] == "lstm_mnist"}
    assert ours == {"lstm_mnist.task"}, ours
    reverse = {str(p.relative_to(PACKAGE)): m for p in PACKAGE.rglob("*.py") for m in _imported(p)
               if m.split(".")[0] == "examples"}
    assert not reverse, reverse
