"""The package's shape, as DESIGN.md draws it: one direction of dependency, the tools apart.

face (guarddb, guarddb.mutex, ...) -> driver layers (guarddb.drivers.*) -> the
driver-neutral policy (guarddb.core) -> the C guard; the tools (guarddb.tools)
stand outside and are never loaded by the runtime.  Read from the source with
``ast`` (module-level imports, which run at import time), and checked in a
fresh interpreter for what ``import guarddb`` really loads.
"""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import guarddb

PACKAGE = pathlib.Path(guarddb.__file__).parent
ROOT = PACKAGE.parent


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                continue  # typing only: never runs
            elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, None)
                    if isinstance(inner, list):
                        walk([n for n in inner if isinstance(n, ast.stmt)])
                for handler in getattr(node, "handlers", []) or []:
                    walk(handler.body)

    walk(tree.body)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def imports_of(name: str) -> set[str]:
    """The modules (of guarddb, or others) that ``name`` imports at module level."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in _module_level_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join([*base, node.module] if node.module else base)
        else:
            module = node.module or ""
        for alias in node.names:
            candidate = f"{module}.{alias.name}"
            found.add(candidate if candidate in MODULES else module)
    return found


def test_no_import_circle():
    graph = {name: {m for m in imports_of(name) if m in MODULES} for name in MODULES}
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_the_policy_knows_no_driver():
    for name in MODULES:
        if name.startswith("guarddb.core"):
            wrong = {
                m
                for m in imports_of(name)
                if m.split(".")[0] in ("MySQLdb", "pymysql")
                or m.startswith(("guarddb.drivers", "guarddb.tools", "guarddb.contrib"))
                or m in ("guarddb.connections", "guarddb.cursors", "guarddb.errors")
            }
            assert not wrong, f"{name} imports {wrong}"


def test_driver_layers_never_import_a_face_or_a_tool():
    faces = {"guarddb", "guarddb._face", "guarddb.connections", "guarddb.cursors"}
    faces |= {"guarddb.errors", "guarddb.mutex"}
    faces |= {name for name in MODULES if name.startswith("guarddb.pymysql")}
    for name in MODULES:
        if name.startswith("guarddb.drivers"):
            wrong = {m for m in imports_of(name) if m in faces or m.startswith("guarddb.tools")}
            assert not wrong, f"{name} imports {wrong}"


def test_the_runtime_imports_no_tool():
    code = (
        "import sys, guarddb, guarddb.cursors, guarddb.connections, guarddb.mutex, "
        "guarddb.contrib.sqlalchemy, guarddb.contrib.dbutils, guarddb.pymysql\n"
        "print(sorted(m for m in sys.modules if m.startswith('guarddb.tools')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_no_tool_module_at_the_top_level():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    faces = {"__init__", "__main__", "_face", "connections", "cursors", "errors", "mutex"}
    assert top <= faces, f"modules beside the faces: {sorted(top - faces)}"


_LAZY_MYSQLCLIENT = """
import json, sys
import guarddb, guarddb.tools.pytest_plugin
before = sorted(m for m in sys.modules if m.split(".")[0] in ("MySQLdb", "pymysql"))
import guarddb.constants.CLIENT as client  # SQLAlchemy's way in, before any other name
import MySQLdb.constants.CLIENT
print(json.dumps({
    "before": before,
    "same_modules": guarddb.constants is MySQLdb.constants and client is MySQLdb.constants.CLIENT,
    "spec": guarddb.constants.__spec__.name,
    "reran": MySQLdb.constants.CLIENT.__dict__ is not client.__dict__,
    "connect": guarddb.connect.__module__,
}))
"""


def test_importing_guarddb_imports_no_driver_until_a_name_of_its_surface_is_used():
    # pytest loads the plugin, and so guarddb, into every test session: PyMySQL's own
    # install_as_MySQLdb() must find MySQLdb unimported there.
    done = subprocess.run(
        [sys.executable, "-c", _LAZY_MYSQLCLIENT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "before": [],
        "same_modules": True,
        "spec": "MySQLdb.constants",
        "reran": False,
        "connect": "guarddb._face",
    }
