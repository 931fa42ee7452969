"""The import rule as a test: each package imports only from the layers below it, and MLflow (the library, its
tag names and its filter strings, its Run objects' `.info` and `.data`) is used in tracking/ alone."""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lstm_mnist"

# Bottom to top; a package may import from a lower layer, never from its own layer's other packages or above.
LAYERS = [
    {"errors", "metrics", "wheels", "__init__"},
    {"task"},
    {"config"},
    {"machine", "analysis"},
    {"claims", "training"},
    {"tracking"},
    {"runs", "engine"},
    {"tuning"},
    {"grids"},
    {"report", "gpu"},
    {"accept"},
    {"cli", "api"},
    {"__main__"},
    {"builtin"},  # the built-in task: a task above the whole harness, which reaches it only by name
]
LAYER = {p: i for i, layer in enumerate(LAYERS) for p in layer}
SELF_CONTAINED = {"wheels"}  # runs before the project is installed: imports nothing of it
MLFLOW_ONLY_IN = "tracking"
FILTER = re.compile(r"\b(tags|params|metrics|attributes)\.[`\w.]+`?\s*(=|!=|<|>|LIKE|ILIKE|IN)\s")
RUN_FIELDS = {"info": {"run_id", "status", "run_name", "start_time", "end_time", "experiment_id", "artifact_uri",
                       "lifecycle_stage"}, "data": {"tags", "params", "metrics"}}


def _package(module: str) -> str:
    parts = module.split(".")
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
                found.append(f"{where} imports {mod}: {me}/ must import nothing of the package")
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


def test_every_package_imports_only_downward_and_mlflow_stays_in_tracking():
    assert violations() == []


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
