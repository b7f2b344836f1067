"""The unikernel is all inside the measured image: the guest package and the arch modules
it reaches import nothing from outside the image but the CPU binding (unicorn) and the
Python standard library modules listed here (ARCHITECTURE.md, "What the guest may import",
says why each). Checked twice: every import statement in the closure (functions included,
read from the source), and every import the kernel's modules make while they load (an
import hook in a fresh interpreter)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
CPU_BINDING = {"unicorn"}
STDLIB = {
    "__future__", "base64", "calendar", "collections", "contextlib", "dataclasses", "enum", "errno",
    "functools", "gzip", "hashlib", "io", "itertools", "json", "struct", "typing", "weakref", "zlib",
}
ALLOWED = CPU_BINDING | STDLIB


def outside_imports(root: Path, package: str, start: str) -> dict[str, set[str]]:
    """Top-level names imported from outside `package` by the modules `start` reaches,
    following relative imports (every import statement, wherever it is)."""
    seen: set[str] = set()
    todo = [start]
    found: dict[str, set[str]] = {}

    def module_file(name: str) -> Path | None:
        rel = Path(*name.split("."))
        for cand in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
            if cand.exists():
                return cand
        return None

    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:
            continue
        if path.name == "__init__.py" and (name + ".").startswith(start + "."):  # all of the guest
            todo += [f"{name}.{p.stem}" for p in path.parent.glob("*.py") if p.name != "__init__.py"]
            todo += [f"{name}.{p.name}" for p in path.parent.iterdir() if (p / "__init__.py").exists()]
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.setdefault(alias.name.split(".")[0], set()).add(name)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.setdefault((node.module or "").split(".")[0], set()).add(name)
            elif isinstance(node, ast.ImportFrom):
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                todo.append(target)
                todo += [f"{target}.{a.name}" for a in node.names]  # `from . import ukrsi`
    return found


def test_the_guest_reaches_only_the_image_the_cpu_binding_and_the_stdlib() -> None:
    found = outside_imports(SRC, "unirealm", "unirealm.guest")
    outside = {name: sorted(where) for name, where in found.items() if name not in ALLOWED}
    assert not outside, f"the guest imports from outside its image: {outside}"
    assert "unicorn" in found  # the binding is reached (the EL0 register names), so the check sees imports


def test_the_check_sees_imports_in_functions_and_absolute_ones(tmp_path: Path) -> None:
    pkg = tmp_path / "fake" / "guest"
    pkg.mkdir(parents=True)
    (tmp_path / "fake" / "__init__.py").write_text("")
    (tmp_path / "fake" / "arch.py").write_text("import cbor2\n")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(textwrap.dedent("""
        import struct
        from .. import arch

        def later():
            import libfdt
            from fake.host import thing
    """))
    found = outside_imports(tmp_path, "fake", "fake.guest")
    assert {"libfdt", "fake", "cbor2", "struct"} <= set(found)
    assert found["libfdt"] == {"fake.guest.a"} and found["cbor2"] == {"fake.arch"}


HOOK = """
import builtins, importlib, json, pkgutil, sys
seen = {}
real = builtins.__import__

def hook(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "")
    if level == 0 and importer.startswith(("unirealm.guest", "unirealm.arch")):
        seen.setdefault(name.split(".")[0], []).append(importer)
    return real(name, globals, locals, fromlist, level)

builtins.__import__ = hook
import unirealm.guest
for info in pkgutil.walk_packages(unirealm.guest.__path__, "unirealm.guest."):
    importlib.import_module(info.name)
importlib.import_module("unirealm.guest.kernel")
print(json.dumps(seen))
"""


def test_loading_the_kernel_imports_nothing_else() -> None:
    out = subprocess.run([sys.executable, "-c", HOOK], env={"PYTHONPATH": str(SRC)}, capture_output=True,
                         text=True, check=True).stdout
    seen = json.loads(out)
    outside = {name: sorted(set(where)) for name, where in seen.items() if name not in ALLOWED}
    assert not outside, f"loading the guest imported from outside its image: {outside}"
    assert "unirealm" not in seen  # only relative imports inside the image
    assert {"struct", "unicorn"} <= set(seen)
