"""The import graph of the installed code: no cycles, layers one way, no private names across
modules (the tests' imports of the package included).

Read with the standard library's ``ast`` from the source folders (nothing is imported). Every
import counts, including those inside functions and under ``TYPE_CHECKING``: a cycle that only
type checking sees is still two modules that need each other.

Layers, top to bottom; a module may import its own layer or any layer below, never above::

    tools                         operator programs: CLI, client helpers, demo, nsmd stand-in
    actors                        the actors of the design card and their runtime
    drivers.plan, drivers.registry   request -> plan, driver table
    drivers.kernel | drivers.vpp  the drivers (never each other)
    drivers.linux                 netns, links, addresses/routes/neighbours, undo
    drivers.base, errors, shapes  the contract: plan types, tags, errors
    config, proto                 settings; generated protobuf code
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "nsm_forwarder"
#: source folder -> installed package (as pyproject.toml's package-dir maps them)
FOLDERS = ("actors", "config", "drivers", "proto", "tools")

#: (module prefix, layer); the longest matching prefix wins; higher layers sit on lower ones
LAYERS: dict[str, int] = {
    "nsm_forwarder.proto": 0,
    "nsm_forwarder.config": 0,
    "nsm_forwarder.drivers.base": 1,
    "nsm_forwarder.drivers.errors": 1,
    "nsm_forwarder.drivers.shapes": 1,
    "nsm_forwarder.drivers.linux": 2,
    "nsm_forwarder.drivers.kernel": 3,
    "nsm_forwarder.drivers.vpp": 3,
    "nsm_forwarder.drivers.plan": 4,
    "nsm_forwarder.drivers.registry": 4,
    "nsm_forwarder.drivers": 4,
    "nsm_forwarder.actors": 5,
    "nsm_forwarder.tools": 6,
}
#: packages of one layer that must not know each other
SIBLINGS = (("nsm_forwarder.drivers.kernel", "nsm_forwarder.drivers.vpp"),)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def _sources() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            found[_module_name(path)] = path
    return found


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module of a (maybe relative) ``from ... import``."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _imports(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) of every import of our package."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node.level, node.module)
            if not target.startswith(PACKAGE):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:  # `from package import module`
                    yield sub, None, node.lineno
                else:
                    yield target, alias.name, node.lineno


def _private_attributes(path: Path, modules: dict[str, str]) -> Iterator[tuple[str, int]]:
    """``mod._name`` uses where ``mod`` is one of our modules imported under that name."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            yield f"{modules[node.value.id]}.{node.attr}", node.lineno


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _tests() -> dict[str, Path]:
    """The test modules: they too use only public names of the package."""
    return {
        ".".join(p.relative_to(ROOT).with_suffix("").parts): p
        for p in sorted((ROOT / "tests").rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    sources = _sources()
    known = set(sources)
    graph: dict[str, set[str]] = {m: set() for m in sources}
    problems: list[str] = []
    for module, path in {**sources, **_tests()}.items():
        aliases: dict[str, str] = {}
        for target, name, line in _imports(module, path, known):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target not in known:
                problems.append(f"{where}: imports {target}, which does not exist")
                continue
            if target != module and module in graph:
                graph[module].add(target)
            if name is None:
                aliases[target.rsplit(".", 1)[-1]] = target
            elif name.startswith("_") and not name.startswith("__"):
                problems.append(f"{where}: imports private name {name} of {target}")
        for used, line in _private_attributes(path, aliases):
            problems.append(f"{path.relative_to(ROOT)}:{line}: uses private {used}")
    return graph, problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_imports_form_no_cycle() -> None:
    graph, _ = _graph()
    assert _cycles(graph) == []


def test_no_private_names_cross_modules() -> None:
    _, problems = _graph()
    assert problems == []


def test_layers_point_down() -> None:
    graph, _ = _graph()
    upward = [
        f"{a} ({_layer(a)}) imports {b} ({_layer(b)})"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if _layer(b) > _layer(a)
    ]
    siblings = [
        f"{a} imports {b}"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        for one, other in SIBLINGS
        for x, y in ((one, other), (other, one))
        if (a == x or a.startswith(x + ".")) and (b == y or b.startswith(y + "."))
    ]
    assert upward + siblings == []


def test_the_check_sees_a_cycle_and_a_private_import(tmp_path: Path) -> None:
    """The checks themselves can fail: a two-module cycle and a private import are found."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(graph) == [["a", "b"]]
    mod = tmp_path / "m.py"
    mod.write_text("from nsm_forwarder.x import y, _z\ny._hidden()\n")
    assert list(_private_attributes(mod, {"y": "nsm_forwarder.x.y"})) == [
        ("nsm_forwarder.x.y._hidden", 2)
    ]
    assert ("nsm_forwarder.x", "_z", 1) in list(_imports("nsm_forwarder.m", mod, set()))
