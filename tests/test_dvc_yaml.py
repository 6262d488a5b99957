"""dvc.yaml tells the truth: each stage lists exactly the code it imports and the params it reads.

The import closure of each stage script inside ``src/`` is computed statically (``ast``, imports
inside functions included) and compared with the stage's ``deps``; the ``params.<section>[.<key>]``
a stage's script reads are compared with its ``params``. A script that hands the whole ``params``
to a function reads every section. ``training.fingerprint`` is the exception: it digests every
param so that a stale checkpoint is never resumed, which shapes no output.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from inat_classifier import layout
from inat_classifier.params import Params

SRC = REPO / "src"
PACKAGE = "inat_classifier"
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
NOT_A_READ = {"fingerprint"}  # see the module docstring


def module_file(name: str) -> Path | None:
    """The file of a dotted module name inside src/, or None for a module from elsewhere."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    path = SRC.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imported_modules(path: Path, name: str | None) -> set[str]:
    """Dotted names of the modules ``path`` imports (``name`` is its own, for relative imports)."""
    package = None
    if name is not None:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)  # `from . import archive`
    # importing a.b.c runs a/__init__.py and a/b/__init__.py first
    return {".".join(n.split(".")[:i]) for n in found for i in range(1, n.count(".") + 2)}


def closure(script: Path) -> set[str]:
    """Repository-relative paths of the files in src/ that running ``script`` imports, empty ones left out."""
    seen: dict[str, Path] = {}
    todo = [(name, None) for name in imported_modules(script, None)]
    while todo:
        name, _ = todo.pop()
        path = module_file(name)
        if path is None or name in seen:
            continue
        seen[name] = path
        todo += [(other, None) for other in imported_modules(path, name)]
    return {p.relative_to(REPO).as_posix() for p in seen.values() if p.read_text().strip()}


def code_deps(stage: dict) -> list[str]:
    return [dep for dep in stage["deps"] if dep.startswith("src/")]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("name", STAGES)
def test_each_stage_lists_exactly_the_code_it_imports(name):
    stage = STAGES[name]
    script = REPO / stage["cmd"].split()[-1]
    assert script.relative_to(REPO).as_posix() in stage["deps"], f"{name}: its own script is not a dep"
    imported, listed = closure(script), code_deps(stage)
    assert not [p for p in sorted(imported) if not covered(p, listed)], f"{name}: imports code dvc.yaml does not list"
    unused = [dep for dep in listed if not any(covered(p, [dep]) for p in imported)]
    assert not unused, f"{name}: dvc.yaml lists code the stage does not import"


def params_read(script: Path) -> set[str]:
    """``section`` or ``section.key`` for each ``params.<section>[.<key>]`` the script reads; every
    section where ``params`` itself is handed on (but to ``fingerprint``)."""
    tree = ast.parse(script.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    reads: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and node.id == "params" and isinstance(node.ctx, ast.Load)):
            continue
        chain, parent = [], parents[node]
        while isinstance(parent, ast.Attribute) and len(chain) < 2:
            chain.append(parent.attr)
            parent = parents[parent]
        if chain:
            reads.add(".".join(chain))
            continue
        call = parents[node]
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) in NOT_A_READ:
            continue
        if isinstance(call, ast.arg) or (isinstance(call, ast.Call) and node is not call.func):
            if isinstance(call, ast.Call):
                reads.update(Params.model_fields)
    return reads


def declared(stage: dict) -> set[str]:
    return {next(iter(p)) if isinstance(p, dict) else p for p in stage.get("params", [])}


@pytest.mark.parametrize("name", STAGES)
def test_each_stage_lists_exactly_the_params_it_reads(name):
    stage = STAGES[name]
    reads, listed = params_read(REPO / stage["cmd"].split()[-1]), declared(stage)
    missing = sorted(r for r in reads if r not in listed and r.split(".")[0] not in listed)
    assert not missing, f"{name}: reads params dvc.yaml does not list"
    unread = sorted(p for p in listed if not any(r == p or r.startswith(p + ".") or p.startswith(r + ".") for r in reads))
    assert not unread, f"{name}: dvc.yaml lists params the stage does not read"
    redundant = sorted(p for p in listed if "." in p and p.split(".")[0] in listed)
    assert not redundant, f"{name}: a key listed beside its whole section"


def test_the_outputs_are_where_layout_py_says():
    outs = {next(iter(o)) if isinstance(o, dict) else o for s in STAGES.values() for o in [*s.get("outs", []), *s.get("metrics", [])]}
    for path in (layout.RAW_DIR, layout.SUBSET_DIR, layout.HEAD_MODEL, layout.MODEL, layout.SUBSET_METRICS):
        assert path.as_posix() in outs
    assert (layout.LIVE_DIR / "finetune").as_posix() in outs
    from inat_classifier.data.classnames import beside

    assert beside(layout.MODEL).as_posix() in outs
