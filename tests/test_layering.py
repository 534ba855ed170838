"""The package's layering, checked on its import graph (parsed, nothing imported).

* no import cycles, counting imports inside functions too;
* nothing outside ``scenetok/components/`` imports from it: core reaches implementations only
  through the registry;
* an import inside a function is allowed only where it keeps start-up torch-free, and says so;
* the DL3DV plugin uses only the public API.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "scenetok"
PLUGIN = ROOT / "plugins" / "scenetok-plugin-dl3dv"

#: What a plugin's code may import (CONTRIBUTING.md, "The plugin API").
PLUGIN_API = ("scenetok.interfaces", "scenetok.types", "scenetok.registry", "scenetok.data", "scenetok.sampling",
              "scenetok.weights",
              "scenetok.geometry", "scenetok.nn", "scenetok.hookspecs", "scenetok.testing")
#: What a user (and a plugin's tests) drives scenetok through, on top of the plugin API.
USER_API = ("scenetok.cli", "scenetok.recipe", "scenetok.model")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str) -> str | None:
    """The scenetok module an import of ``name`` loads (``a.b.func`` -> ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(path: Path, package: str) -> list[tuple[str, bool, int]]:
    """``(imported scenetok module, inside a function, line)`` for every import in ``path``."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # type-only imports never run
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + [base])
                names = [f"{base}.{alias.name}" for alias in child.names]
            for name in names:
                if name.startswith("scenetok.") or name == "scenetok":
                    found.append((name, inside, child.lineno))
            visit(child, inside)

    visit(tree, False)
    return found


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for target, _, _ in imports(path, package):
            resolved = resolve(target)
            if resolved and resolved != name:
                edges[name].add(resolved)
    return edges


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for other in sorted(edges[node]):
            if state.get(other) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(other):] + [other]))
            if other not in state:
                visit(other)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_nothing_outside_components_imports_components():
    offenders = [f"{name} -> {target}" for name, targets in graph().items() for target in targets
                 if target.startswith("scenetok.components") and not name.startswith("scenetok.components")]
    assert not offenders, offenders


def test_function_level_imports_only_keep_start_up_light_and_say_so():
    lazy = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for target, inside, line in imports(path, package):
            if inside and "# lazy:" not in lines[line - 1]:
                lazy.append(f"{path.relative_to(ROOT)}:{line}: {lines[line - 1].strip()}")
    assert not lazy, "function-level imports without a '# lazy: <reason>' comment:\n" + "\n".join(lazy)


def test_the_dl3dv_plugin_uses_only_the_public_api():
    offenders = []
    for path in PLUGIN.rglob("*.py"):
        allowed = PLUGIN_API + (USER_API if "tests" in path.parts else ())
        for target, _, line in imports(path, "scenetok_plugin_dl3dv"):
            if not any(target == api or target.startswith(api + ".") for api in allowed):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert not offenders, offenders
