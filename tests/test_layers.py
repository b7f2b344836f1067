"""The layers import one way (ARCHITECTURE.md "Layers"): cli -> attest -> host -> rmm ->
machine -> arch; the guest imports only arch and itself. Every `import`/`from` in every
module counts, at any depth (a function-local import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unirealm"

# What each layer may import besides itself.
ALLOWED = {
    "arch": set(),
    "machine": {"arch"},
    "rmm": {"arch", "machine"},
    "host": {"arch", "machine", "rmm"},
    "attest": {"arch", "machine", "rmm", "host"},
    "cli": {"arch", "machine", "rmm", "host", "attest"},
    "guest": {"arch"},
}


def imported_layers(source: str, package: tuple[str, ...], layer: str) -> set[tuple[str, int]]:
    """(layer, line) for every other unirealm layer a module of `package` imports."""
    tree = ast.parse(source)
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "unirealm" and len(parts) > 1:
                    found.add((parts[1], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package[: len(package) - node.level + 1]
                parts = [*base, *(node.module.split(".") if node.module else [])]
            else:
                parts = node.module.split(".") if node.module else []
            if parts[:1] == ["unirealm"] and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return {(dep, line) for dep, line in found if dep != layer}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_point_one_way(layer: str) -> None:
    bad = []
    for path in sorted((SRC / layer).rglob("*.py")):
        package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
        for dep, line in sorted(imported_layers(path.read_text(), package, layer)):
            if dep in ALLOWED and dep not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(SRC)}:{line} imports {dep}")
    assert not bad, "\n".join(bad)


def test_every_layer_is_listed() -> None:
    layers = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert layers == set(ALLOWED)


def test_the_check_sees_a_violation() -> None:
    """The walker finds function-local and relative imports (so the test above can fail)."""
    source = "def f():\n    from ..host import vmm\n    import unirealm.cli.main\n    from . import rtt\n"
    assert {dep for dep, _ in imported_layers(source, ("unirealm", "rmm"), "rmm")} == {"host", "cli"}


MAX_LINES = 600
SIZE_REASON = "Why one module:"


def test_no_module_is_long_without_a_reason() -> None:
    """A module past ~600 lines says in its docstring why it stays one module."""
    long = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > MAX_LINES and SIZE_REASON not in doc:
            long.append(f"{path.relative_to(SRC)} ({len(text.splitlines())} lines)")
    assert not long, f"over {MAX_LINES} lines without '{SIZE_REASON}' in the docstring: {long}"


def layer_rows() -> dict[str, str]:
    """ARCHITECTURE.md's Layers table: layer -> its row."""
    rows = {}
    for line in (SRC.parents[1] / "ARCHITECTURE.md").read_text().splitlines():
        if line.startswith("| `") and "/` | " in line:
            layer, _, row = line[3:].partition("/` | ")
            rows[layer] = row
    return rows


def test_architecture_names_every_module_in_its_layer() -> None:
    """Every module appears, by its file name in backquotes, in its own layer's row."""
    rows = layer_rows()
    assert set(rows) == set(ALLOWED), f"layer rows {sorted(rows)} against the layers {sorted(ALLOWED)}"
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if len(rel.parts) < 2 or path.name == "__init__.py":
            continue
        row = rows[rel.parts[0]]
        if f"`{path.name}`" not in row and f"/{path.name}`" not in row:
            missing.append(str(rel))
    assert not missing, f"modules ARCHITECTURE.md's Layers table does not name: {missing}"
