"""The layers of docs/architecture.md: the core imports no trio and nothing
of the shell, the fronts never import the command, framing imports neither
trio nor the layers above the core; arrows point down only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trio_msink"

CORE = ["_buffer", "_enums", "_history", "_inflight", "_limits", "_log", "_placement",
        "_positions", "_properties", "_settings", "_stats"]
SHELL = ["_client", "_clock", "_direct", "_fanout", "_framed", "_readers", "_sink", "_sockopts",
         "_tasks"]


FRONTS = sorted(p.stem for p in (PACKAGE / "fronts").glob("*.py"))
FRAMING = sorted(p.stem for p in (PACKAGE / "framing").glob("*.py"))


def runtime_imports(module: str) -> set[str]:
    """Modules imported when ``module`` (a path below the package, without
    ``.py``) runs, not those under TYPE_CHECKING."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_every_library_module_is_in_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("_*.py")} - {"__init__", "__main__"}
    assert modules == set(CORE) | set(SHELL)


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_trio_and_nothing_of_the_shell(module: str) -> None:
    imports = runtime_imports(module)
    assert not {name for name in imports if name.split(".")[0] in ("trio", "anyio")}
    assert not {name for name in imports if name.lstrip(".") in SHELL}
    assert not {name for name in imports if name.lstrip(".").split(".")[0]
                in ("fronts", "cli", "framing")}


@pytest.mark.parametrize("module", SHELL)
def test_the_shell_uses_neither_fronts_nor_the_command(module: str) -> None:
    imports = runtime_imports(module)
    assert not {name for name in imports if name.lstrip(".").split(".")[0] in ("fronts", "cli")}


def _top(name: str, package: str) -> str:
    """The first part of an imported name, as seen from a subpackage:
    ``..cli._main`` -> ``cli``, ``._base`` -> ``framing``, ``trio.abc`` -> ``trio``."""
    if name.startswith(".."):
        return name[2:].split(".")[0] or "trio_msink"
    if name.startswith("."):
        return package
    return name.split(".")[0]


@pytest.mark.parametrize("module", FRONTS)
def test_the_fronts_never_import_the_command(module: str) -> None:
    imports = runtime_imports(f"fronts/{module}")
    assert "cli" not in {_top(name, "fronts") for name in imports}


@pytest.mark.parametrize("module", FRAMING)
def test_framing_imports_neither_trio_nor_fronts_nor_the_command(module: str) -> None:
    imports = runtime_imports(f"framing/{module}")
    tops = {_top(name, "framing") for name in imports}
    assert not tops & {"trio", "anyio", "fronts", "cli"}
    # Beside the core, framing may use only the Buffer it makes.
    assert {name for name in imports if name.startswith("..")} <= {".._buffer"}


def test_every_module_is_placed_in_docs_architecture() -> None:
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    missing = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py"))
               if path.stem not in ("__init__", "__main__") and path.stem not in text]
    assert not missing, f"docs/architecture.md does not place {missing}"
